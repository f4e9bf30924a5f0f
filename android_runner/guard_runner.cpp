// guard_runner: the `guard bench` runner contract (guard/bench/runner_main.py) in C++ on the ExecuTorch runtime.
//
//   guard_runner --model model.pte --threads N --runs R --warmup W --prompt-tokens 16,40 --out stats.json
//
// It makes the calls guard.bench.host makes through PteRunner/Guard: per run it loads the .pte (metadata from the
// constant methods, then `prefill` and `decode` sharing their KV-cache arena), and per message length it times
//   1. a verdict on an empty cache (TTFT = prefill of guard prompt + "\n\n"), then 16 greedy decode steps;
//   2. a verdict for another message with the policy head cached (prefix reuse, like Guard._feed).
// The token ids come from guard_prompts.txt beside the model (guard/bench/prompts.py writes it; `guard bench
// --device` pushes it), so no tokenizer runs on the device. Output: the guard-bench-1 stats document, each record
// with the field names of ExecuTorch's LLM runner Stats (extension/llm/runner/stats.h).
//
// Built on the core runtime API (Program/Method/MemoryManager, extension_tensor, extension_threadpool) rather than
// extension/module's Module: these headers ship in the executorch pip wheel, so the same source compiles and runs
// on a host against the wheel (CMake option GUARD_RUNNER_FROM_WHEEL) and on Android against an NDK build.

#include "guard_runner.h"

#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#ifdef GUARD_RUNNER_LLM_STATS
#include <executorch/extension/llm/runner/stats.h>
#endif

#ifdef GUARD_RUNNER_WITH_CORE
#include <nlohmann/json.hpp>

#include "guard/tokenizer.h"
#endif

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

using executorch::aten::ScalarType;
using executorch::extension::from_blob;
using executorch::runtime::DataLoader;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::FreeableBuffer;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::Program;
using executorch::runtime::Result;
using executorch::runtime::Span;

namespace guard {

// ---- loading: an mmapped .pte, malloc-backed allocators, planned arenas shared by all methods ----

class MmapLoader final : public DataLoader {
 public:
  explicit MmapLoader(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail("model file not found: " + path);
    struct stat st {};
    fstat(fd, &st);
    size_ = static_cast<size_t>(st.st_size);
    data_ = size_ ? mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (data_ == MAP_FAILED) fail("cannot map " + path);
  }
  ~MmapLoader() override { munmap(data_, size_); }
  Result<FreeableBuffer> load(size_t offset, size_t size, const SegmentInfo&) const override {
    if (offset + size > size_) return Error::InvalidArgument;
    return FreeableBuffer(static_cast<const uint8_t*>(data_) + offset, size, nullptr);
  }
  Result<size_t> size() const override { return size_; }

 private:
  void* data_ = MAP_FAILED;
  size_t size_ = 0;
};

// The runtime's MemoryAllocator is a bump allocator over a fixed span; the method allocator's total is not known
// before loading, so allocate from the heap (what extension/memory_allocator's MallocMemoryAllocator does).
class HeapAllocator final : public MemoryAllocator {
 public:
  HeapAllocator() : MemoryAllocator(0, nullptr) {}
  ~HeapAllocator() override { reset(); }
  void* allocate(size_t size, size_t alignment) override {
    void* p = nullptr;
    if (posix_memalign(&p, std::max(alignment, sizeof(void*)), std::max<size_t>(size, 1))) return nullptr;
    blocks_.push_back(p);
    return p;
  }
  void reset() override {
    for (void* p : blocks_) free(p);
    blocks_.clear();
  }

 private:
  std::vector<void*> blocks_;
};

struct Model {
  std::unique_ptr<MmapLoader> loader;
  std::unique_ptr<Program> program;
  HeapAllocator method_alloc, temp_alloc;
  std::vector<std::vector<uint8_t>> arenas;  // planned buffers (mem_id 1, 2, ...), one set for every method
  std::vector<Span<uint8_t>> spans;
  std::unique_ptr<HierarchicalAllocator> planned;
  std::unique_ptr<MemoryManager> memory;
  std::map<std::string, std::unique_ptr<Method>> methods;
  Meta meta;

  Method& method(const std::string& name) {
    auto it = methods.find(name);
    if (it != methods.end()) return *it->second;
    auto m = program->load_method(name.c_str(), memory.get());
    if (!m.ok()) fail("cannot load the " + name + " method from the model (truncated or corrupt?)");
    return *(methods[name] = std::make_unique<Method>(std::move(m.get())));
  }

  std::vector<EValue> run(const std::string& name, const std::vector<EValue>& inputs) {
    Method& m = method(name);
    for (size_t i = 0; i < inputs.size(); ++i)
      if (m.set_input(inputs[i], i) != Error::Ok) fail("bad input " + std::to_string(i) + " for " + name);
    if (m.execute() != Error::Ok) fail("executing " + name + " failed");
    std::vector<EValue> out(m.outputs_size());
    if (m.get_outputs(out.data(), out.size()) != Error::Ok) fail("reading the outputs of " + name + " failed");
    return out;
  }
};

static void plan_memory(Model& m) {
  // Sized to the max over all methods and shared, like Module(share_memory_arenas=true): `prefill` and `decode`
  // were exported with share_mutable_buffers=True, so both must see the same KV-cache bytes (mem_id 2).
  std::vector<size_t> sizes;
  for (size_t i = 0; i < m.program->num_methods(); ++i) {
    auto meta = m.program->method_meta(m.program->get_method_name(i).get());
    if (!meta.ok()) fail("cannot read method metadata");
    for (size_t b = 0; b < meta->num_memory_planned_buffers(); ++b) {
      size_t s = meta->memory_planned_buffer_size(b).get();
      if (b >= sizes.size()) sizes.push_back(0);
      sizes[b] = std::max(sizes[b], s);
    }
  }
  for (size_t s : sizes) m.arenas.emplace_back(s);  // zero-filled: unwritten cache slots hold zeros
  for (auto& a : m.arenas) m.spans.emplace_back(a.data(), a.size());
  m.planned = std::make_unique<HierarchicalAllocator>(Span<Span<uint8_t>>(m.spans.data(), m.spans.size()));
  m.memory = std::make_unique<MemoryManager>(&m.method_alloc, m.planned.get(), &m.temp_alloc);
}

static Json json_of(const EValue& v) {
  if (v.isString()) return std::string(v.toString());
  if (v.isInt()) return v.toInt();
  if (v.isDouble()) return v.toDouble();
  if (v.isBool()) return v.toBool();
  return Json();
}

static std::unique_ptr<Model> load_model(const std::string& path) {
  auto m = std::make_unique<Model>();
  m->loader = std::make_unique<MmapLoader>(path);
  auto p = Program::load(m->loader.get(), Program::Verification::Minimal);
  if (!p.ok()) fail(path + " is not a loadable ExecuTorch program (truncated or corrupt?)");
  m->program = std::make_unique<Program>(std::move(p.get()));
  plan_memory(*m);
  std::vector<std::string> names;
  for (size_t i = 0; i < m->program->num_methods(); ++i) names.push_back(m->program->get_method_name(i).get());
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  if (!has(kMarker)) fail(path + " is not a guard model (no " + kMarker + " method); export it with `guard export`");
  std::vector<const char*> keys(std::begin(kRequired), std::end(kRequired));
  if (has(kChunks)) keys.push_back(kChunks);
  for (const char* key : keys) {
    if (!has(key)) fail(path + " lacks metadata " + key + "; re-export it with `guard export`");
    std::vector<EValue> out = m->run(key, {});
    if (out.empty()) fail(std::string("cannot read metadata ") + key + " from the .pte");
    auto& vals = m->meta.values[key];
    for (const EValue& v : out) vals.push_back(json_of(v));
    m->methods.erase(key);  // constant methods are read once
  }
  m->meta.finish();
  if (m->meta.str(kMarker) != kPteFormat)
    fail(path + " has format '" + m->meta.str(kMarker) + "'; this runtime reads '" + kPteFormat + "'");
  if (m->meta.str("get_prompt_format") != kPromptFormat)
    fail(path + " expects prompt format '" + m->meta.str("get_prompt_format") + "', not '" + kPromptFormat + "'");
  for (const char* name : {"prefill", "decode"}) {
    if (!has(name)) fail(path + " lacks the " + name + " method; re-export it with `guard export`");
    m->method(name);
  }
  return m;
}

// ---- the Runner protocol (guard/runner.py) over the two methods, as guard/export/runtime.py calls them ----

class PteRunner {
 public:
  explicit PteRunner(Model& m) : m_(m), chunk_(m.meta.num("get_prefill_chunk")), max_seq_len_(m.meta.num("get_max_seq_len")) {}

  // Writes positions start_pos.. in padded chunks; returns the logits of the last token.
  std::vector<float> prefill(const std::vector<int64_t>& tokens, int64_t start_pos) {
    if (tokens.empty()) fail("prefill needs at least one token");
    check(tokens.size(), start_pos);
    int64_t pos = start_pos;
    std::vector<float> out;
    for (size_t i = 0; i < tokens.size(); i += chunk_) {
      size_t n = std::min(tokens.size() - i, static_cast<size_t>(chunk_));
      if ((n == 1 && !out.empty()) || tokens.size() == 1) return decode(tokens[i], pos);
      std::vector<int64_t> x(tokens.begin() + i, tokens.begin() + i + n), p(chunk_), last{static_cast<int64_t>(n) - 1};
      x.resize(chunk_, 0);
      for (int64_t k = 0; k < chunk_; ++k) p[k] = pos + k;
      out = call("prefill", x, p, last);
      pos += n;
    }
    return out;
  }

  std::vector<float> decode(int64_t token, int64_t pos) {
    check(1, pos);
    std::vector<int64_t> x{token}, p{pos}, last{0};
    return call("decode", x, p, last);
  }

 private:
  void check(size_t n, int64_t start) const {
    if (start < 0 || start + static_cast<int64_t>(n) > max_seq_len_)
      fail("positions " + std::to_string(start) + ".." + std::to_string(start + n - 1) +
           " exceed the model's max_seq_len " + std::to_string(max_seq_len_));
  }
  std::vector<float> call(const char* name, std::vector<int64_t>& x, std::vector<int64_t>& p, std::vector<int64_t>& last) {
    auto tx = from_blob(x.data(), {1, static_cast<int>(x.size())}, ScalarType::Long);
    auto tp = from_blob(p.data(), {static_cast<int>(p.size())}, ScalarType::Long);
    auto tl = from_blob(last.data(), {1}, ScalarType::Long);
    std::vector<EValue> out = m_.run(name, {EValue(*tx), EValue(*tp), EValue(*tl)});
    const auto& t = out.at(0).toTensor();  // [1, vocab]: copy, the arena is reused by the next call
    const float* d = t.const_data_ptr<float>();
    return std::vector<float>(d, d + t.numel());
  }
  Model& m_;
  int64_t chunk_, max_seq_len_;
};

// ---- Guard.classify over token ids: prefix caching, first-token verdict, category decoding when unsafe ----

class Guard {
 public:
  Guard(PteRunner& r, const Meta& meta) : r_(r), meta_(meta) {
    safe_ = column(meta.num("get_safe_id"));
    unsafe_ = column(meta.num("get_unsafe_id"));
    if (safe_ < 0 || unsafe_ < 0 || column(meta.num("get_eot_id")) < 0)
      fail("the model's output vocabulary lacks a verdict token");
  }
  void invalidate() { cached_.clear(); }

  // ids = guard prompt + "\n\n". Returns the verdict; prefill_ms and prefilled tokens of the prompt part.
  Verdict classify(const std::vector<int64_t>& ids) {
    Verdict v;
    double t0 = now_ms();
    if (ids.size() + 3 + kMaxCategoryTokens > static_cast<size_t>(meta_.num("get_max_seq_len")))
      fail("conversation needs " + std::to_string(ids.size() + 3 + kMaxCategoryTokens) +
           " tokens with the verdict, more than the model's maximum of " + std::to_string(meta_.num("get_max_seq_len")));
    size_t keep = 0;
    while (keep < cached_.size() && keep + 1 < ids.size() && cached_[keep] == ids[keep]) ++keep;
    cached_.clear();
    std::vector<float> logits = r_.prefill(std::vector<int64_t>(ids.begin() + keep, ids.end()), keep);
    cached_ = ids;
    v.prefill_ms = now_ms() - t0;
    v.prefilled_tokens = ids.size() - keep;
    v.p_unsafe = p_unsafe(logits[safe_], logits[unsafe_]);
    int64_t top = argmax(logits), pos = ids.size();
    if (top != safe_ && top != unsafe_) {
      v.decision = "indeterminate";
    } else if (v.p_unsafe < 0.5) {
      v.decision = "safe";
    } else {  // "unsafe", "\n", "S" forced as one chunk, then greedy until end of turn. Without a tokenizer the
              // category text is not parsed: "unsafe" here means an end of turn came within 24 tokens.
      std::vector<int64_t> forced{meta_.num("get_unsafe_id"), meta_.num("get_newline_id"), meta_.num("get_s_id")};
      logits = r_.prefill(forced, pos);
      cached_.insert(cached_.end(), forced.begin(), forced.end());
      pos += forced.size();
      v.decision = "indeterminate";
      for (int i = 0; i < kMaxCategoryTokens; ++i) {
        int64_t next = token_of(argmax(logits));
        if (next == meta_.num("get_eot_id")) {
          v.decision = "unsafe";
          break;
        }
        logits = r_.decode(next, pos++);
        cached_.push_back(next);
        v.category_tokens++;
      }
    }
    v.latency_ms = now_ms() - t0;
    return v;
  }

  int64_t token_of(int64_t col) const { return meta_.output_ids.empty() ? col : meta_.output_ids.at(col); }

 private:
  int64_t column(int64_t token) const {
    if (meta_.output_ids.empty()) return token;
    auto it = std::find(meta_.output_ids.begin(), meta_.output_ids.end(), token);
    return it == meta_.output_ids.end() ? -1 : it - meta_.output_ids.begin();
  }
  PteRunner& r_;
  const Meta& meta_;
  int64_t safe_, unsafe_;
  std::vector<int64_t> cached_;
};

// ---- the benchmark: guard.bench.host._one / run_bench ----

// ExecuTorch's LLM runner prints this line (extension/llm/runner/stats.h, stats_to_json_string); tools parse it.
static void print_observer(double load_ms, double ttft, double decode_ms, int64_t n_prompt, int64_t n_generated) {
  printf("PyTorchObserver {\"prompt_tokens\":%lld,\"generated_tokens\":%lld,\"model_load_start_ms\":0,"
         "\"model_load_end_ms\":%ld,\"inference_start_ms\":%ld,\"inference_end_ms\":%ld,\"prompt_eval_end_ms\":%ld,"
         "\"first_token_ms\":%ld,\"aggregate_sampling_time_ms\":0,\"SCALING_FACTOR_UNITS_PER_SECOND\":1000}\n",
         static_cast<long long>(n_prompt), static_cast<long long>(n_generated), std::lround(load_ms), std::lround(load_ms),
         std::lround(load_ms + ttft + decode_ms), std::lround(load_ms + ttft), std::lround(load_ms + ttft));
  fflush(stdout);
}

static Json one(Model& m, const Prompts& prompts, int n, double load_ms, int decode_tokens) {
  PteRunner runner(m);
  Guard guard(runner, m.meta);
  const auto& first_ids = prompts.first.at(n);
  Verdict first = guard.classify(first_ids);
  double ttft = first.prefill_ms;
  int64_t n_prompt = first_ids.size(), pos = n_prompt, token = m.meta.num("get_safe_id");
  double d0 = now_ms();
  for (int i = 0; i < decode_tokens; ++i) {
    std::vector<float> logits = runner.decode(token, pos++);
    token = guard.token_of(argmax(logits));
  }
  double decode_ms = now_ms() - d0;
  guard.invalidate();
  guard.classify(prompts.warm);  // the loaded guard has its policy head cached
  Verdict v = guard.classify(prompts.second.at(n));
  Json r = et_stats(0.0, load_ms, load_ms, load_ms + ttft, load_ms + ttft, load_ms + ttft + decode_ms, n_prompt, decode_tokens);
  r.add("message_tokens", n).add("model_load_ms", round_to(load_ms, 1)).add("ttft_ms", round_to(ttft, 2));
  r.add("prefill_tok_s", round_to(n_prompt / ttft * 1e3, 1)).add("decode_tok_s", round_to(decode_tokens / decode_ms * 1e3, 2));
  r.add("verdict_ms", round_to(v.latency_ms, 2)).add("verdict_prefilled_tokens", static_cast<int64_t>(v.prefilled_tokens));
  r.add("peak_rss_mb", round_to(peak_rss_mb(), 1));
  if (const char* path = getenv("GUARD_RUNNER_VERDICTS")) {  // for correctness checks against the Python runtime
    std::ofstream f(path, std::ios::app);
    for (auto [name, verdict] : {std::pair{"first", &first}, std::pair{"second", &v}}) {
      Json line;
      line.add("message_tokens", n).add("prompt", name).add("decision", verdict->decision).add("p_unsafe", verdict->p_unsafe);
      f << line.str() << "\n";
    }
  }
#ifndef GUARD_RUNNER_LLM_STATS
  print_observer(load_ms, ttft, decode_ms, n_prompt, decode_tokens);
#else
  executorch::extension::llm::Stats stats;  // integer ms, printed the way ExecuTorch's LLM runners print them
  stats.reset();
  stats.model_load_end_ms = std::lround(load_ms);
  stats.inference_start_ms = stats.model_load_end_ms;
  stats.prompt_eval_end_ms = stats.first_token_ms = std::lround(load_ms + ttft);
  stats.inference_end_ms = std::lround(load_ms + ttft + decode_ms);
  stats.num_prompt_tokens = n_prompt;
  stats.num_generated_tokens = decode_tokens;
  printf("PyTorchObserver %s\n", executorch::extension::llm::stats_to_json_string(stats).c_str());
#endif
  return r;
}

#ifdef GUARD_RUNNER_WITH_CORE
// Tokenize and render the bench messages on the device, as an app would (android_runner/guard/): tokenizer.json and
// guard_format.json beside the model. The ids must be the host's, token for token; the run stops if not.
static void tokenize_on_device(const std::string& dir, Prompts& p) {
  std::ifstream probe(dir + "/guard_format.json");
  if (!probe || p.warm_text.empty()) return;
  Format fmt(dir + "/guard_format.json");
  Tokenizer tok(dir + "/tokenizer.json", fmt);
  auto shown = fmt.policy({});
  auto head = fmt.head_ids(tok, shown, "User");
  int64_t blank = tok.single_id("\n\n");
  auto ids_of = [&](const std::string& json_text, const std::vector<int64_t>& host, const std::string& what) {
    std::string text = nlohmann::json::parse(json_text).get<std::string>();
    std::vector<Message> msgs{{"user", text}};
    fmt.check_conversation(msgs);
    std::vector<int64_t> ids(head);
    auto body = fmt.body_ids(tok, msgs);
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(blank);
    if (ids != host) fail("the device tokenizes the " + what + " prompt differently from the host (" + std::to_string(ids.size()) +
                          " vs " + std::to_string(host.size()) + " tokens)");
    return ids;
  };
  p.warm = ids_of(p.warm_text, p.warm, "warm");
  for (auto& [n, t] : p.first_text)
    if (p.first.count(n)) p.first[n] = ids_of(t, p.first[n], "first " + std::to_string(n));
  for (auto& [n, t] : p.second_text)
    if (p.second.count(n)) p.second[n] = ids_of(t, p.second[n], "second " + std::to_string(n));
  p.source = "tokenized and rendered on the device (tokenizer.json, guard_format.json); equal to the host's ids";
}
#endif

int run(const Args& a) {
  Prompts prompts = read_prompts(dir_of(a.model) + "/" + kPromptsFile, a.prompt_tokens);
#ifdef GUARD_RUNNER_WITH_CORE
  tokenize_on_device(dir_of(a.model), prompts);
#endif
  executorch::runtime::runtime_init();
  auto* pool = executorch::extension::threadpool::get_threadpool();
  // Like guard.export.runtime.set_threads: --threads, else GUARD_THREADS, else every available core.
  int threads = a.threads > 0 ? a.threads : getenv("GUARD_THREADS") ? atoi(getenv("GUARD_THREADS")) : 0;
  if (threads <= 0) threads = machine(0).at("available_cores").as_int();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  if (pool->get_thread_count() != static_cast<size_t>(threads)) pool->_unsafe_reset_threadpool(threads);
#pragma GCC diagnostic pop
  std::vector<Json> records;
  std::string backend;
  Json meta;
  for (int r = 0; r < a.warmup + a.runs; ++r) {
    double t0 = now_ms();
    auto model = load_model(a.model);
    double load_ms = now_ms() - t0;
    backend = "pte:" + model->meta.str("get_quant_scheme");
    meta = model->meta.json();
    for (int n : a.prompt_tokens) {
      Json rec = one(*model, prompts, n, load_ms, kDecodeTokens);
      rec.add("run", r).add("warmup", r < a.warmup);
      records.push_back(rec);
      fprintf(stderr, "run %d, %d message tokens: %s\n", r, n, rec.str().c_str());
    }
  }
  Json doc;
  doc.add("schema", kSchema).add("model", a.model).add("backend", backend).add("metadata", meta);
  doc.add("machine", machine(static_cast<int>(pool->get_thread_count()))).add("versions", versions());
  doc.add("command", a.command).add("config", config(a, kDecodeTokens)).add("prompts", prompts.source);
  doc.add("summary", summary(records, a.prompt_tokens));
  doc.add("runs", Json::array(records));
  std::ofstream f(a.out);
  f << doc.str(1) << "\n";
  if (!f) fail("cannot write " + a.out);
  return 0;
}

}  // namespace guard

int main(int argc, char** argv) {
  guard::Args a;
  if (int rc = guard::parse_args(argc, argv, a); rc >= 0) return rc;
  try {
    return guard::run(a);
  } catch (const guard::Failure& e) {
    fprintf(stderr, "guard_runner: error: %s\n", e.what());
    return 2;
  }
}
