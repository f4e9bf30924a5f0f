// guard::Pte: an mmapped .pte, malloc-backed allocators, one set of planned arenas shared by all methods (what
// Module(..., share_memory_arenas=true) does; the exporter writes the KV cache with share_mutable_buffers=True).
// Core runtime API only (Program/Method/MemoryManager, extension_tensor, extension_threadpool): these headers ship in
// the executorch pip wheel, so the same source builds here against the wheel and on Android against an NDK build.
#include "pte.h"

#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "format.h"

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

// guard/export/metadata.py
static const char* kMarker = "get_guard_format";
static const char* kPteFormat = "guard-pte-1";
static const char* kRequired[] = {
    "get_guard_format", "get_max_seq_len", "get_prefill_chunk", "get_vocab_size", "get_output_ids",
    "get_prompt_format", "get_quant_scheme", "get_group_size", "get_bos_id", "get_eot_id", "get_safe_id",
    "get_unsafe_id", "get_newline_id", "get_blank_id", "get_s_id"};
// Read when present: the sha256 of the tokenizer.json it was exported with (TOKENIZER_DIGEST; older files lack it).
static const char* kOptional[] = {"get_tokenizer_sha256"};

namespace {

class MmapLoader final : public DataLoader {
 public:
  explicit MmapLoader(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail("model file not found: " + path);
    struct stat st {};
    fstat(fd, &st);
    size_ = static_cast<size_t>(st.st_size);
    data_ = size_ && S_ISREG(st.st_mode) ? mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (data_ == MAP_FAILED) fail(path + " is not a loadable ExecuTorch program (empty or not a file)");
  }
  ~MmapLoader() override { munmap(data_, size_); }
  Result<FreeableBuffer> load(size_t offset, size_t size, const SegmentInfo&) const override {
    if (offset > size_ || size > size_ - offset) return Error::InvalidArgument;
    return FreeableBuffer(static_cast<const uint8_t*>(data_) + offset, size, nullptr);
  }
  Result<size_t> size() const override { return size_; }

 private:
  void* data_ = MAP_FAILED;
  size_t size_ = 0;
};

class HeapAllocator final : public MemoryAllocator {  // extension/memory_allocator's MallocMemoryAllocator
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

MetaValue value_of(const EValue& v) {
  MetaValue m;
  if (v.isString()) m.is_string = true, m.s = std::string(v.toString());
  else if (v.isInt()) m.i = v.toInt(), m.d = static_cast<double>(m.i);
  else if (v.isDouble()) m.d = v.toDouble(), m.i = static_cast<int64_t>(m.d);
  else if (v.isBool()) m.i = v.toBool();
  return m;
}

}  // namespace

struct Pte::Impl {
  std::unique_ptr<MmapLoader> loader;
  std::unique_ptr<Program> program;
  HeapAllocator method_alloc, temp_alloc;
  std::vector<std::vector<uint8_t>> arenas;
  std::vector<Span<uint8_t>> spans;
  std::unique_ptr<HierarchicalAllocator> planned;
  std::unique_ptr<MemoryManager> memory;
  std::map<std::string, std::unique_ptr<Method>> methods;

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
  void plan() {  // sized to the max over all methods and shared by them
    std::vector<size_t> sizes;
    for (size_t i = 0; i < program->num_methods(); ++i) {
      auto meta = program->method_meta(program->get_method_name(i).get());
      if (!meta.ok()) fail("cannot read method metadata (truncated or corrupt?)");
      for (size_t b = 0; b < meta->num_memory_planned_buffers(); ++b) {
        size_t s = meta->memory_planned_buffer_size(b).get();
        if (b >= sizes.size()) sizes.push_back(0);
        sizes[b] = std::max(sizes[b], s);
      }
    }
    for (size_t s : sizes) arenas.emplace_back(s);  // zero-filled: unwritten cache slots hold zeros
    for (auto& a : arenas) spans.emplace_back(a.data(), a.size());
    planned = std::make_unique<HierarchicalAllocator>(Span<Span<uint8_t>>(spans.data(), spans.size()));
    memory = std::make_unique<MemoryManager>(&method_alloc, planned.get(), &temp_alloc);
  }
};

int Pte::set_threads(int n) {
  static std::once_flag once;
  std::call_once(once, [] { executorch::runtime::runtime_init(); });
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (n <= 0 && getenv("GUARD_THREADS")) n = atoi(getenv("GUARD_THREADS"));
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  if (pool && pool->get_thread_count() != static_cast<size_t>(n)) pool->_unsafe_reset_threadpool(n);
#pragma GCC diagnostic pop
  return pool ? static_cast<int>(pool->get_thread_count()) : 1;
}

Pte::Pte(const std::string& path) : impl_(new Impl), path_(path) {
  set_threads(0);
  auto& m = *impl_;
  m.loader = std::make_unique<MmapLoader>(path);
  auto p = Program::load(m.loader.get(), Program::Verification::InternalConsistency);
  if (!p.ok()) fail(path + " is not a loadable ExecuTorch program (truncated or corrupt?)");
  m.program = std::make_unique<Program>(std::move(p.get()));
  std::vector<std::string> names;
  for (size_t i = 0; i < m.program->num_methods(); ++i) names.push_back(m.program->get_method_name(i).get());
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  if (!has(kMarker)) fail(path + " is not a guard model (no " + kMarker + " method); export it with `guard export`");
  m.plan();
  std::vector<const char*> keys(std::begin(kRequired), std::end(kRequired));
  for (const char* key : kOptional)
    if (has(key)) keys.push_back(key);
  for (const char* key : keys) {
    if (!has(key)) fail(path + " lacks metadata " + key + "; re-export it with `guard export`");
    std::vector<EValue> out = m.run(key, {});
    if (out.empty()) fail(std::string("cannot read metadata ") + key + " from " + path);
    for (const EValue& v : out) meta_[key].push_back(value_of(v));
    m.methods.erase(key);  // constant methods are read once
  }
  for (const auto& v : meta_.at("get_output_ids")) output_ids_.push_back(v.i);
  if (output_ids_.size() == 1 && output_ids_[0] == -1) output_ids_.clear();
  if (str(kMarker) != kPteFormat) fail(path + " has format '" + str(kMarker) + "'; this runtime reads '" + kPteFormat + "'");
  for (const char* name : {"prefill", "decode"}) {
    if (!has(name)) fail(path + " lacks the " + name + " method; re-export it with `guard export`");
    m.method(name);
  }
  chunk_ = num("get_prefill_chunk");
  max_seq_len_ = num("get_max_seq_len");
}

Pte::~Pte() = default;

int64_t Pte::num(const std::string& key) const { return meta_.at(key).at(0).i; }
std::string Pte::str(const std::string& key) const {
  const auto& v = meta_.at(key).at(0);
  return v.is_string ? v.s : std::to_string(v.i);
}

std::vector<float> Pte::prefill(const std::vector<int64_t>& tokens, int64_t start_pos) {
  if (tokens.empty()) fail("prefill needs at least one token");
  if (start_pos < 0 || start_pos + static_cast<int64_t>(tokens.size()) > max_seq_len_)
    fail("positions " + std::to_string(start_pos) + ".." + std::to_string(start_pos + tokens.size() - 1) +
         " exceed the model's max_seq_len " + std::to_string(max_seq_len_));
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

std::vector<float> Pte::decode(int64_t token, int64_t pos) {
  if (pos < 0 || pos >= max_seq_len_)
    fail("positions " + std::to_string(pos) + ".." + std::to_string(pos) + " exceed the model's max_seq_len " + std::to_string(max_seq_len_));
  std::vector<int64_t> x{token}, p{pos}, last{0};
  return call("decode", x, p, last);
}

std::vector<float> Pte::call(const char* name, std::vector<int64_t>& x, std::vector<int64_t>& p, std::vector<int64_t>& last) {
  auto tx = from_blob(x.data(), {1, static_cast<int>(x.size())}, ScalarType::Long);
  auto tp = from_blob(p.data(), {static_cast<int>(p.size())}, ScalarType::Long);
  auto tl = from_blob(last.data(), {1}, ScalarType::Long);
  std::vector<EValue> out = impl_->run(name, {EValue(*tx), EValue(*tp), EValue(*tl)});
  if (out.empty() || !out[0].isTensor()) fail(std::string(name) + " returned no logits");
  const auto& t = out[0].toTensor();  // [1, vocab]: copied, the arena is reused by the next call
  const float* d = t.const_data_ptr<float>();
  return std::vector<float>(d, d + t.numel());
}

}  // namespace guard
