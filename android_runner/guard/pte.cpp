// guard::Pte: guard/runtime/pte.py's PteRunner in C++, on the .pte layer shared with etlite
// (guard/runtime/pte_program.h: mmap, XNNPACK weight cache, planned arenas shared by all methods).
#include "pte.h"

#include <sched.h>

#include <atomic>
#include <functional>

#include "../../guard/runtime/pte_program.h"

namespace guard {

// guard/export/metadata.py: MARKER, PTE_FORMAT; read when present (older files lack them): CHUNKS and the sha256 of
// the tokenizer.json the file was exported with (TOKENIZER_DIGEST).
static const char* kMarker = "get_guard_format";
static const char* kPteFormat = "guard-pte-1";
static const char* kOptional[] = {kPteChunks, kPteSpan, "get_tokenizer_sha256"};
static const int64_t kCallOverhead = 10;  // guard.runtime.pte.CALL_OVERHEAD: a call costs about 10 more tokens

static std::atomic<bool> threads_chosen{false};

int Pte::set_threads(int n) {
  if (n <= 0 && getenv("GUARD_THREADS")) n = atoi(getenv("GUARD_THREADS"));
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  threads_chosen = true;
  return std::max(threadpool_size(n), 1);
}

std::vector<int64_t> plan(int64_t n, const std::vector<int64_t>& sizes) {
  std::vector<int64_t> calls;
  int64_t big = sizes.at(0);
  for (; n > 2 * big; n -= big) calls.push_back(big);  // full largest chunks first
  std::vector<int64_t> cost(n + 1, 0), first(n + 1, 0);  // the cheapest mix for the rest (the last call may be padded)
  for (int64_t k = 1; k <= n; ++k)
    for (int64_t s : sizes) {  // largest first; the first of equal costs wins, as in _best
      int64_t c = s >= k ? s + kCallOverhead : cost[k - s] + s + kCallOverhead;
      if (!first[k] || c < cost[k]) cost[k] = c, first[k] = s;
    }
  for (int64_t k = n; k > 0; k = first[k] >= k ? 0 : k - first[k]) calls.push_back(first[k]);
  return calls;
}

Pte::Pte(const std::string& path) {
  if (!threads_chosen) set_threads(0);
  const char* cache = getenv("GUARD_WEIGHT_CACHE");  // as guard.runtime.pte.open_program: on unless "0"
  // Workspace per program (mode 1), not etlite's global one: Classifiers on other threads then run in parallel.
  set_xnnpack_options(!(cache && std::string(cache) == "0"), 1);
  program_ = std::make_unique<PteProgram>(path);
  auto& p = *program_;
  if (!p.has(kMarker)) fail(path + " is not a guard model (no " + kMarker + " method); export it with `guard export`");
  std::vector<const char*> keys(std::begin(kPteRequired), std::end(kPteRequired));
  for (const char* key : kOptional)
    if (p.has(key)) keys.push_back(key);
  for (const char* key : keys) {
    if (!p.has(key)) fail(path + " lacks metadata " + key + "; re-export it with `guard export`");
    meta_[key] = p.constant(key);
    if (meta_[key].empty()) fail(std::string("cannot read metadata ") + key + " from " + path);
  }
  for (const auto& v : meta_.at("get_output_ids")) output_ids_.push_back(v.i);
  if (output_ids_.size() == 1 && output_ids_[0] == -1) output_ids_.clear();
  if (str(kMarker) != kPteFormat) fail(path + " has format '" + str(kMarker) + "'; this runtime reads '" + kPteFormat + "'");
  for (const char* name : {"prefill", "decode"})
    if (!p.has(name)) fail(path + " lacks the " + name + " method; re-export it with `guard export`");
  chunk_ = num("get_prefill_chunk");
  max_seq_len_ = num("get_max_seq_len");
  if (chunk_ < 1 || max_seq_len_ < 1) fail(path + " has an unusable prefill chunk or max_seq_len; re-export it");
  chunks_ = {1};
  if (has(kPteChunks))
    for (const auto& v : meta_.at(kPteChunks)) chunks_.push_back(v.i);
  else
    chunks_.push_back(chunk_);
  std::sort(chunks_.begin(), chunks_.end(), std::greater<int64_t>());
  chunks_.erase(std::unique(chunks_.begin(), chunks_.end()), chunks_.end());
  for (int64_t c : chunks_) {  // guard.export.metadata.chunk_method
    if (c < 1) fail(path + " names a prefill chunk of " + std::to_string(c) + " tokens; re-export it");
    chunk_names_[c] = c == 1 ? "decode" : c == chunk_ ? "prefill" : "prefill_" + std::to_string(c);
    if (!p.has(chunk_names_[c])) fail(path + " lacks the " + chunk_names_[c] + " method its metadata names; re-export it");
  }
  span_ = has(kPteSpan) ? num(kPteSpan) : 0;
  if (span_ < 0) fail(path + " names an attention span of " + std::to_string(span_) + "; re-export it");
  if (span_ > 0)
    for (int64_t k = 0; k < max_seq_len_; ++k) keys_.push_back(static_cast<float>(k));
  for (const auto& [c, name] : chunk_names_) p.method(name);  // XNNPACK packs the weights now, not at the first call
}

Pte::~Pte() = default;

int64_t Pte::num(const std::string& key) const { return meta_.at(key).at(0).i; }
std::string Pte::str(const std::string& key) const {
  const auto& v = meta_.at(key).at(0);
  return v.is_string() ? v.s : std::to_string(v.i);
}

static void check(size_t n, int64_t start, int64_t max_seq_len) {
  if (start < 0 || start + static_cast<int64_t>(n) > max_seq_len)
    throw SequenceTooLong("positions " + std::to_string(start) + ".." + std::to_string(start + static_cast<int64_t>(n) - 1) +
                          " exceed the model's max_seq_len " + std::to_string(max_seq_len));
}

std::vector<float> Pte::prefill(const std::vector<int64_t>& tokens, int64_t start_pos) {
  if (tokens.empty()) fail("prefill needs at least one token");
  check(tokens.size(), start_pos, max_seq_len_);
  size_t i = 0;
  std::vector<float> out;
  for (int64_t size : plan(static_cast<int64_t>(tokens.size()), chunks_)) {
    size_t n = std::min(tokens.size() - i, static_cast<size_t>(size));
    out = run(size, tokens.data() + i, n, start_pos + static_cast<int64_t>(i));
    i += n;
  }
  return out;
}

std::vector<float> Pte::decode(int64_t token, int64_t pos) {
  check(1, pos, max_seq_len_);
  return run(1, &token, 1, pos);
}

// One call of the method for `size` tokens: n real tokens padded with zeros, positions pos..pos+size-1, the logits
// of the last real token (copied: the arena is reused by the next call).
std::vector<float> Pte::run(int64_t size, const int64_t* tokens, size_t n, int64_t pos) {
  std::vector<int64_t> x(tokens, tokens + n), p(size);
  x.resize(size, 0);
  for (int64_t k = 0; k < size; ++k) p[k] = pos + k;
  size_t v = 0;
  // As guard.runtime.pte.PteRunner._keys: the real tokens' end rounded up to the span step, at most max_seq_len.
  int64_t end = pos + static_cast<int64_t>(n);
  int S = span_ > 0 ? static_cast<int>(std::min(max_seq_len_, (end + span_ - 1) / span_ * span_)) : 0;
  const float* logits = program_->step(chunk_names_.at(size), x.data(), p.data(), static_cast<int>(size),
                                       static_cast<int64_t>(n) - 1, v, S > 0 ? keys_.data() : nullptr, S);
  return std::vector<float>(logits, logits + v);
}

}  // namespace guard
