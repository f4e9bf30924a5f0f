// etlite: a C API over ExecuTorch's C++ runtime for guard.runtime.pte, called through ctypes.
//
// Why: the pip runtime's Python bindings take and return torch tensors only, so `import torch` (1-4 s) was on
// every `guard classify`. This library is compiled once against the executorch wheel's headers and its
// _portable_lib (which exports the runtime symbols; android_runner/ builds the same way) and passes plain int64 /
// float buffers. It also turns on what the bindings cannot: XNNPACK's weight cache (the methods `prefill*` and
// `decode` then share one packed copy of the weights instead of one each) and a global XNNPACK workspace. The
// .pte is mmapped; the planned memory (KV cache) is one set of buffers shared by all methods, like
// Module(share_memory_arenas=true), because the exporter writes the cache with share_mutable_buffers=True.
//
// Build: guard/runtime/etlite.py (g++, cached under GUARD_HOME). Every function returns 0 / a handle on success
// and writes a one-line message into err otherwise.

#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/interface.h>
#include <executorch/runtime/backend/options.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

using executorch::aten::ScalarType;
using executorch::extension::from_blob;
using executorch::runtime::BackendOption;
using executorch::runtime::BackendOptionContext;
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

// extension/threadpool/threadpool.h needs pthreadpool.h, which the wheel does not ship; these two members are all
// that is used, and _portable_lib exports them.
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

void say(char* err, size_t n, const std::string& msg) {
  if (err && n) snprintf(err, n, "%s", msg.c_str());
}

// Read-only private mapping of the whole file. A segment the runtime frees (a delegate's weights after XNNPACK
// packed them) is dropped from memory with MADV_DONTNEED; the pages come back from the file if read again.
class MmapLoader final : public DataLoader {
 public:
  static std::unique_ptr<MmapLoader> open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return nullptr;
    struct stat st {};
    fstat(fd, &st);
    auto l = std::unique_ptr<MmapLoader>(new MmapLoader());
    l->size_ = static_cast<size_t>(st.st_size);
    l->data_ = l->size_ ? mmap(nullptr, l->size_, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (l->data_ == MAP_FAILED) return nullptr;
    return l;
  }
  ~MmapLoader() override {
    if (data_ != MAP_FAILED) munmap(data_, size_);
  }
  Result<FreeableBuffer> load(size_t offset, size_t size, const SegmentInfo& info) const override {
    if (offset > size_ || size > size_ - offset) return Error::InvalidArgument;
    const uint8_t* p = static_cast<const uint8_t*>(data_) + offset;
    if (info.segment_type == SegmentInfo::Type::Program || size < (1u << 20))
      return FreeableBuffer(p, size, nullptr);
    return FreeableBuffer(p, size, [](void*, void* data, size_t n) {
      uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
      uintptr_t a = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
      uintptr_t b = (reinterpret_cast<uintptr_t>(data) + n) & ~(page - 1);
      if (b > a) madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
    }, nullptr);
  }
  Result<size_t> size() const override { return size_; }

 private:
  MmapLoader() = default;
  void* data_ = MAP_FAILED;
  size_t size_ = 0;
};

// The method allocator's total is not known before loading: allocate from the heap.
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
  // Planned arenas as anonymous mappings: zero pages cost no memory until written, so the 1,152-slot KV cache and
  // the largest method's scratch only count for the pages a request touches (a std::vector zero-filled them all).
  struct Arena {
    uint8_t* data = nullptr;
    size_t size = 0;
    Arena(size_t n) : size(n) {
      void* p = n ? mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
      data = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    }
    ~Arena() {
      if (data) munmap(data, size);
    }
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
  };
  std::vector<std::unique_ptr<Arena>> arenas;
  std::vector<Span<uint8_t>> spans;
  std::unique_ptr<HierarchicalAllocator> planned;
  std::unique_ptr<MemoryManager> memory;
  std::map<std::string, std::unique_ptr<Method>> methods;
  std::vector<std::string> names;
};

Method* method(Model* m, const char* name, char* err, size_t n) {
  auto it = m->methods.find(name);
  if (it != m->methods.end()) return it->second.get();
  auto r = m->program->load_method(name, m->memory.get());
  if (!r.ok()) {
    say(err, n, std::string("cannot load the ") + name + " method (error " + std::to_string(int(r.error())) + ")");
    return nullptr;
  }
  return (m->methods[name] = std::make_unique<Method>(std::move(r.get()))).get();
}

// weight_cache: one packed copy of each weight for all methods. packed_path (optional, needs weight_cache): keep
// the packed weights in that file (MAP_SHARED) and reuse them in later processes instead of packing again.
void set_xnnpack_options(bool weight_cache, const char* packed_path) {
  auto* backend = executorch::runtime::get_backend_class("XnnpackBackend");
  if (!backend) return;
  BackendOption opts[3];
  strcpy(opts[0].key, "weight_cache_enabled");
  opts[0].value = weight_cache;
  strcpy(opts[1].key, "workspace_sharing_mode");
  opts[1].value = weight_cache ? 2 : 0;  // Global: one activation arena for every delegate call
  size_t n = 2;
  if (weight_cache && packed_path && *packed_path) {
    std::array<char, executorch::runtime::kMaxOptionValueLength> v{};
    strncpy(v.data(), packed_path, v.size() - 1);
    strcpy(opts[2].key, "packed_cache_path");
    opts[2].value = v;
    n = 3;
  }
  BackendOptionContext ctx;
  (void)backend->set_option(ctx, Span<BackendOption>(opts, n));
}

}  // namespace

extern "C" {

void* etl_open(const char* path, int weight_cache, const char* packed_path, char* err, size_t n) {
  executorch::runtime::runtime_init();
  set_xnnpack_options(weight_cache != 0, packed_path);
  auto m = std::make_unique<Model>();
  m->loader = MmapLoader::open(path);
  if (!m->loader) return say(err, n, std::string("model file not found or unreadable: ") + path), nullptr;
  // InternalConsistency: the flatbuffer is verified before anything reads it (Minimal crashed on a hostile file
  // whose header passes guard.runtime.pte.check_pte_file; tests/runtime/test_hostile_input.py).
  auto p = Program::load(m->loader.get(), Program::Verification::InternalConsistency);
  if (!p.ok()) return say(err, n, std::string(path) + " is not a loadable ExecuTorch program (truncated or corrupt?)"), nullptr;
  m->program = std::make_unique<Program>(std::move(p.get()));
  std::vector<size_t> sizes;  // planned buffers sized to the max over all methods, shared by all of them
  for (size_t i = 0; i < m->program->num_methods(); ++i) {
    auto name = m->program->get_method_name(i);
    if (!name.ok()) return say(err, n, "cannot read the method names"), nullptr;
    m->names.emplace_back(name.get());
    auto meta = m->program->method_meta(name.get());
    if (!meta.ok()) return say(err, n, "cannot read method metadata"), nullptr;
    for (size_t b = 0; b < meta->num_memory_planned_buffers(); ++b) {
      size_t s = meta->memory_planned_buffer_size(b).get();
      if (b >= sizes.size()) sizes.push_back(0);
      sizes[b] = std::max(sizes[b], s);
    }
  }
  for (size_t s : sizes) {  // zero-filled: unwritten cache slots hold zeros
    m->arenas.push_back(std::make_unique<Model::Arena>(s));
    if (s && !m->arenas.back()->data) return say(err, n, "cannot allocate the model's planned memory"), nullptr;
  }
  for (auto& a : m->arenas) m->spans.emplace_back(a->data, a->size);
  m->planned = std::make_unique<HierarchicalAllocator>(Span<Span<uint8_t>>(m->spans.data(), m->spans.size()));
  m->memory = std::make_unique<MemoryManager>(&m->method_alloc, m->planned.get(), &m->temp_alloc);
  return m.release();
}

// XNNPACK's current weight_cache_enabled (1/0), or -1 when it cannot be read.
int etl_weight_cache_enabled() {
  auto* backend = executorch::runtime::get_backend_class("XnnpackBackend");
  if (!backend) return -1;
  BackendOption opt;
  strcpy(opt.key, "weight_cache_enabled");
  opt.value = false;
  executorch::runtime::BackendOptionContext ctx;
  Span<BackendOption> span(&opt, 1);
  if (backend->get_option(ctx, span) != Error::Ok) return -1;
  auto* v = std::get_if<bool>(&opt.value);
  return v ? int(*v) : -1;
}

// XNNPACK's threadpool size (n > 0 resets it); returns the size in use.
int etl_threads(int n) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (!pool) return 0;
  if (n > 0 && pool->get_thread_count() != static_cast<size_t>(n)) pool->_unsafe_reset_threadpool(n);
  return static_cast<int>(pool->get_thread_count());
}

void etl_close(void* h) { delete static_cast<Model*>(h); }

// The planned-memory arenas (the KV cache and the methods' activations, shared by every method): their number, and
// arena i's address and size. guard.runtime.prefix snapshots them after the policy head is prefilled.
int etl_num_arenas(void* h) { return static_cast<int>(static_cast<Model*>(h)->arenas.size()); }

uint8_t* etl_arena(void* h, int i, size_t* size) {
  auto& a = static_cast<Model*>(h)->arenas.at(i);
  *size = a->size;
  return a->data;
}

int etl_num_methods(void* h) { return static_cast<int>(static_cast<Model*>(h)->names.size()); }

const char* etl_method_name(void* h, int i) { return static_cast<Model*>(h)->names.at(i).c_str(); }

int etl_load(void* h, const char* name, char* err, size_t n) {
  return method(static_cast<Model*>(h), name, err, n) ? 0 : -1;
}

// A constant method: its outputs as ints (kinds[i] = 0), a string (kinds[i] = 1, copied into text) or a double
// (kinds[i] = 2, in floats). Returns the number of outputs, or -1.
int etl_constant(void* h, const char* name, int64_t* ints, double* floats, int* kinds, int max_out, char* text,
                 size_t text_len, char* err, size_t n) {
  auto* m = static_cast<Model*>(h);
  Method* meth = method(m, name, err, n);
  if (!meth) return -1;
  if (meth->execute() != Error::Ok) return say(err, n, std::string("cannot read metadata ") + name), -1;
  int count = static_cast<int>(std::min<size_t>(meth->outputs_size(), max_out));
  for (int i = 0; i < count; ++i) {
    const EValue& v = meth->get_output(i);
    kinds[i] = -1;
    if (v.isInt()) kinds[i] = 0, ints[i] = v.toInt();
    else if (v.isBool()) kinds[i] = 0, ints[i] = v.toBool();
    else if (v.isDouble()) kinds[i] = 2, floats[i] = v.toDouble();
    else if (v.isString()) {
      auto s = v.toString();
      kinds[i] = 1;
      snprintf(text, text_len, "%.*s", static_cast<int>(s.size()), s.data());
    }
  }
  m->methods.erase(name);
  return count;
}

// Run a guard method (tokens[1, T], pos[T], last[1]) -> logits[1, V]: copies V floats into out. Returns V, or -1.
int etl_step(void* h, const char* name, const int64_t* tokens, const int64_t* pos, int T, int64_t last, float* out,
             int out_len, char* err, size_t n) {
  auto* m = static_cast<Model*>(h);
  Method* meth = method(m, name, err, n);
  if (!meth) return -1;
  auto t = from_blob(const_cast<int64_t*>(tokens), {1, T}, ScalarType::Long);
  auto p = from_blob(const_cast<int64_t*>(pos), {T}, ScalarType::Long);
  int64_t last_v = last;
  auto l = from_blob(&last_v, {1}, ScalarType::Long);
  EValue in[3] = {EValue(*t), EValue(*p), EValue(*l)};
  for (size_t i = 0; i < 3; ++i)
    if (meth->set_input(in[i], i) != Error::Ok)
      return say(err, n, std::string("bad input ") + std::to_string(i) + " for " + name), -1;
  if (meth->execute() != Error::Ok) return say(err, n, std::string("executing ") + name + " failed"), -1;
  const EValue& o = meth->get_output(0);
  if (!o.isTensor() || o.toTensor().scalar_type() != ScalarType::Float)
    return say(err, n, std::string(name) + " returned no float tensor"), -1;
  const auto& ot = o.toTensor();
  int v = static_cast<int>(ot.size(ot.dim() - 1));
  if (v > out_len) return say(err, n, "logits buffer too small"), -1;
  memcpy(out, ot.const_data_ptr<float>(), sizeof(float) * v);
  return v;
}

}  // extern "C"
