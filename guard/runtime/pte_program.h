// guard::PteProgram: the one .pte loading layer of this project, shared by etlite.cpp (PteRunner's C library, built
// from this directory by guard/runtime/etlite.py, also from an installed package) and android_runner/guard/pte.cpp
// (the native guard core and guard_runner), which include it from here.
//
// An ExecuTorch program on the core runtime API (Program/Method/MemoryManager, extension_tensor): the .pte is mmapped
// read-only; a segment the runtime frees (a delegate's weights once XNNPACK packed them) is dropped from memory; the
// planned memory (KV cache, activations) is one set of arenas sized to the maximum over all methods and shared by
// them, like Module(share_memory_arenas=true), because the exporter writes the cache with share_mutable_buffers=True;
// the arenas are anonymous mappings, so zero pages cost nothing until written. XNNPACK's weight cache (set before the
// methods load) gives every method one packed copy of the weights instead of one each.
//
// Header-only: etlite compiles one source file against the executorch wheel's headers, and the native builds
// (CMake, build.sh) need no new source file. Errors are guard::Failure with a one-line message.
#pragma once

#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/backend_options_map.h>
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
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pte_common.h"

// extension/threadpool/threadpool.h needs pthreadpool.h, which the wheel does not ship; these two members are all
// that is used, and the runtime (the wheel's _portable_lib, or extension_threadpool on Android) exports them.
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace guard {

namespace pte_detail {

namespace rt = executorch::runtime;

// Read-only private mapping of the whole file. A segment of 1 MiB or more that the runtime frees is dropped with
// MADV_DONTNEED; its pages come back from the file if read again.
class MmapLoader final : public rt::DataLoader {
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
  rt::Result<rt::FreeableBuffer> load(size_t offset, size_t size, const SegmentInfo& info) const override {
    if (offset > size_ || size > size_ - offset) return rt::Error::InvalidArgument;
    const uint8_t* p = static_cast<const uint8_t*>(data_) + offset;
    if (info.segment_type == SegmentInfo::Type::Program || size < (1u << 20)) return rt::FreeableBuffer(p, size, nullptr);
    return rt::FreeableBuffer(p, size, [](void*, void* data, size_t n) {
      uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
      uintptr_t a = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
      uintptr_t b = (reinterpret_cast<uintptr_t>(data) + n) & ~(page - 1);
      if (b > a) madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
    }, nullptr);
  }
  rt::Result<size_t> size() const override { return size_; }

 private:
  void* data_ = MAP_FAILED;
  size_t size_ = 0;
};

// The method allocator's total is not known before loading: allocate from the heap (what extension/memory_allocator's
// MallocMemoryAllocator does).
class HeapAllocator final : public rt::MemoryAllocator {
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

}  // namespace pte_detail

// A planned-memory arena: an anonymous mapping, zero-filled (unwritten cache slots hold zeros) and free until written.
struct Arena {
  uint8_t* data = nullptr;
  size_t size = 0;
  explicit Arena(size_t n) : size(n) {
    void* p = n ? mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    data = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    if (n && !data) fail("cannot allocate the model's planned memory");
  }
  ~Arena() {
    if (data) munmap(data, size);
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
};

inline void runtime_init_once() {
  static std::once_flag once;
  std::call_once(once, [] { executorch::runtime::runtime_init(); });
}

// XNNPACK's backend options, for the methods loaded after this call. weight_cache: one packed copy of each weight for
// all methods. workspace_mode: 0 one activation workspace per delegate call site, 1 per program, 2 one for the process
// (its calls then run one at a time). A packed-weight file is a per-program option (PteProgram::set_packed_path).
inline void set_xnnpack_options(bool weight_cache, int workspace_mode) {
  using executorch::runtime::BackendOption;
  runtime_init_once();
  auto* backend = executorch::runtime::get_backend_class("XnnpackBackend");
  if (!backend) return;
  BackendOption opts[2];
  strcpy(opts[0].key, "weight_cache_enabled");
  opts[0].value = weight_cache;
  strcpy(opts[1].key, "workspace_sharing_mode");
  opts[1].value = workspace_mode;
  executorch::runtime::BackendOptionContext ctx;
  (void)backend->set_option(ctx, executorch::runtime::Span<BackendOption>(opts, 2));
}

// XNNPACK's current weight_cache_enabled (1/0), or -1 when it cannot be read.
inline int xnnpack_weight_cache_enabled() {
  using executorch::runtime::BackendOption;
  runtime_init_once();
  auto* backend = executorch::runtime::get_backend_class("XnnpackBackend");
  if (!backend) return -1;
  BackendOption opt;
  strcpy(opt.key, "weight_cache_enabled");
  opt.value = false;
  executorch::runtime::BackendOptionContext ctx;
  executorch::runtime::Span<BackendOption> span(&opt, 1);
  if (backend->get_option(ctx, span) != executorch::runtime::Error::Ok) return -1;
  auto* v = std::get_if<bool>(&opt.value);
  return v ? int(*v) : -1;
}

// XNNPACK's threadpool: n > 0 resets it to n threads; returns the number in use (0: no threadpool).
inline int threadpool_size(int n) {
  runtime_init_once();
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (!pool) return 0;
  if (n > 0 && pool->get_thread_count() != static_cast<size_t>(n)) pool->_unsafe_reset_threadpool(n);
  return static_cast<int>(pool->get_thread_count());
}

class PteProgram {
 public:
  // Maps and verifies the program (InternalConsistency: the flatbuffer is checked before anything reads it) and plans
  // the shared arenas. Methods load on first use.
  explicit PteProgram(const std::string& path) : path_(path) {
    namespace rt = executorch::runtime;
    runtime_init_once();
    loader_ = std::make_unique<pte_detail::MmapLoader>(path);
    auto p = rt::Program::load(loader_.get(), rt::Program::Verification::InternalConsistency);
    if (!p.ok()) fail(path + " is not a loadable ExecuTorch program (truncated or corrupt?)");
    program_ = std::make_unique<rt::Program>(std::move(p.get()));
    std::vector<size_t> sizes;  // planned buffers sized to the max over all methods, shared by all of them
    for (size_t i = 0; i < program_->num_methods(); ++i) {
      auto name = program_->get_method_name(i);
      if (!name.ok()) fail("cannot read the method names of " + path + " (truncated or corrupt?)");
      names_.emplace_back(name.get());
      auto meta = program_->method_meta(name.get());
      if (!meta.ok()) fail("cannot read method metadata of " + path + " (truncated or corrupt?)");
      for (size_t b = 0; b < meta->num_memory_planned_buffers(); ++b) {
        size_t s = meta->memory_planned_buffer_size(b).get();
        if (b >= sizes.size()) sizes.push_back(0);
        sizes[b] = std::max(sizes[b], s);
      }
    }
    for (size_t s : sizes) arenas_.push_back(std::make_unique<Arena>(s));
    for (auto& a : arenas_) spans_.emplace_back(a->data, a->size);
    planned_ = std::make_unique<rt::HierarchicalAllocator>(rt::Span<rt::Span<uint8_t>>(spans_.data(), spans_.size()));
    memory_ = std::make_unique<rt::MemoryManager>(&method_alloc_, planned_.get(), &temp_alloc_);
  }

  const std::string& path() const { return path_; }
  const std::vector<std::string>& method_names() const { return names_; }
  bool has(const std::string& name) const { return std::find(names_.begin(), names_.end(), name) != names_.end(); }
  const std::vector<std::unique_ptr<Arena>>& arenas() const { return arenas_; }

  // Keep XNNPACK's packed weights in ``path`` (MAP_SHARED, with the weight cache on): the methods loaded after this
  // call pack into it, and a later process that names the same file maps them instead of packing (the lookup is by
  // weight name and ukernel). XNNPACK 1.4.1 reads packed_cache_path only as a per-load runtime spec, so it is passed
  // to every load_method. A path too long for an option value means no packed file. Returns whether it is set.
  bool set_packed_path(const std::string& path) {
    std::array<char, executorch::runtime::kMaxOptionValueLength> v{};
    if (path.empty() || path.size() >= v.size()) return has_packed_ = false;
    std::copy(path.begin(), path.end(), v.begin());
    strcpy(packed_opt_.key, "packed_cache_path");
    packed_opt_.value = v;
    has_packed_ = backend_opts_.set_options("XnnpackBackend",
                                            executorch::runtime::Span<executorch::runtime::BackendOption>(&packed_opt_, 1)) ==
                  executorch::runtime::Error::Ok;
    return has_packed_;
  }

  executorch::runtime::Method& method(const std::string& name) {
    auto it = methods_.find(name);
    if (it != methods_.end()) return *it->second;
    auto m = program_->load_method(name.c_str(), memory_.get(), nullptr, nullptr, has_packed_ ? &backend_opts_ : nullptr);
    if (!m.ok())
      fail("cannot load the " + name + " method from the model (error " + std::to_string(int(m.error())) +
           "; truncated or corrupt?)");
    return *(methods_[name] = std::make_unique<executorch::runtime::Method>(std::move(m.get())));
  }

  // A constant method's outputs (the metadata), executed once: the method is unloaded afterwards.
  std::vector<MetaValue> constant(const std::string& name) {
    auto& m = method(name);
    if (m.execute() != executorch::runtime::Error::Ok) fail("cannot read metadata " + name + " from " + path_);
    std::vector<MetaValue> out;
    for (size_t i = 0; i < m.outputs_size(); ++i) {
      const auto& v = m.get_output(i);
      MetaValue x;
      if (v.isString()) x.kind = MetaValue::Kind::String, x.s = std::string(v.toString());
      else if (v.isInt()) x.i = v.toInt(), x.d = static_cast<double>(x.i);
      else if (v.isBool()) x.i = v.toBool(), x.d = static_cast<double>(x.i);
      else if (v.isDouble()) x.kind = MetaValue::Kind::Double, x.d = v.toDouble(), x.i = static_cast<int64_t>(x.d);
      else fail("metadata " + name + " of " + path_ + " has an output that is not a number or a string");
      out.push_back(std::move(x));
    }
    methods_.erase(name);
    return out;
  }

  // A guard step: name(tokens[1, T], pos[T], [last][, keys[1, S]]) -> logits [1, V]. keys (S > 0): the key positions
  // 0..S-1 of a file exported with an attention span (attention reads those cache slots only). Returns the V floats,
  // valid until the next call (the arenas are reused): copy them.
  const float* step(const std::string& name, const int64_t* tokens, const int64_t* pos, int T, int64_t last, size_t& V,
                    const float* keys = nullptr, int S = 0) {
    using executorch::aten::ScalarType;
    using executorch::extension::from_blob;
    namespace rt = executorch::runtime;
    auto& m = method(name);
    auto t = from_blob(const_cast<int64_t*>(tokens), {1, T}, ScalarType::Long);
    auto p = from_blob(const_cast<int64_t*>(pos), {T}, ScalarType::Long);
    int64_t last_v = last;
    auto l = from_blob(&last_v, {1}, ScalarType::Long);
    auto k = from_blob(const_cast<float*>(keys ? keys : &zero_), {1, S > 0 ? S : 1}, ScalarType::Float);
    rt::EValue in[4] = {rt::EValue(*t), rt::EValue(*p), rt::EValue(*l), rt::EValue(*k)};
    for (size_t i = 0; i < (S > 0 ? 4u : 3u); ++i)
      if (m.set_input(in[i], i) != rt::Error::Ok) fail("bad input " + std::to_string(i) + " for " + name);
    if (m.execute() != rt::Error::Ok) fail("executing " + name + " failed");
    if (m.outputs_size() == 0) fail(name + " returned no logits");
    const auto& o = m.get_output(0);
    if (!o.isTensor() || o.toTensor().scalar_type() != ScalarType::Float) fail(name + " returned no float logits");
    const auto& ot = o.toTensor();
    V = static_cast<size_t>(ot.size(ot.dim() - 1));
    return ot.const_data_ptr<float>();
  }

 private:
  std::string path_;
  float zero_ = 0.0f;
  std::unique_ptr<pte_detail::MmapLoader> loader_;
  std::unique_ptr<executorch::runtime::Program> program_;
  pte_detail::HeapAllocator method_alloc_, temp_alloc_;
  std::vector<std::unique_ptr<Arena>> arenas_;
  std::vector<executorch::runtime::Span<uint8_t>> spans_;
  std::unique_ptr<executorch::runtime::HierarchicalAllocator> planned_;
  std::unique_ptr<executorch::runtime::MemoryManager> memory_;
  executorch::runtime::BackendOption packed_opt_;  // declared before methods_: it outlives the loaded methods
  executorch::runtime::LoadBackendOptionsMap backend_opts_;
  bool has_packed_ = false;
  std::map<std::string, std::unique_ptr<executorch::runtime::Method>> methods_;
  std::vector<std::string> names_;
};

}  // namespace guard
