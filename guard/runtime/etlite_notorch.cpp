// What etlite's torch-free runtime needs besides pthreadpool (etlite_pool.cpp); see etlite_notorch.py.
//
// 1. quantized_decomposed::embedding_4bit (.out and .dtype_out). The wheel has this kernel only in
//    kernels/quantized/libquantized_ops_aot_lib.so, whose static initialisers also register the op with torch's
//    dispatcher (torch::Library), so it cannot load without libtorch. Registered here into the private runtime copy,
//    with the arithmetic of executorch's kernels/quantized/cpu/embeddingxb.cpp: out[j] = (float(q) - float(zp)) *
//    float(scale), q the 4-bit value minus 8 (high nibble first), one scale (and zero point) per group.
// 2. The torch functions _portable_lib's pybind layer references (at::Tensor conversion), which etlite never calls:
//    each aborts with a message. BLAS (sgemm_ and friends, which the optimized CPU kernels may call for matmuls not
//    delegated to XNNPACK) is forwarded to libtorch_cpu.so, loaded on first use.
//
// Compiled only into the torch-free build: -DETLITE_NOTORCH.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_runtime_context.h>
#include <executorch/runtime/kernel/operator_registry.h>

namespace {

namespace rt = executorch::runtime;
using executorch::aten::Half;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;

template <typename P, typename O>
void embed4(const Tensor& w, const Tensor& scales, const P* zp, const Tensor& idx, Tensor& out) {
  const int64_t packed = w.size(1), dim = packed * 2;
  const int64_t groups = scales.dim() == 2 ? scales.size(1) : 1, group = dim / groups;
  const uint8_t* wd = w.const_data_ptr<uint8_t>();
  const P* sd = scales.const_data_ptr<P>();
  const int64_t* ix = idx.const_data_ptr<int64_t>();
  O* o = out.mutable_data_ptr<O>();
  for (ssize_t i = 0; i < idx.numel(); i++, o += dim) {
    const int64_t row = ix[i];
    const uint8_t* q = wd + packed * row;
    for (int64_t j = 0; j < dim; j++) {
      const int64_t g = row * groups + j / group;
      const int32_t v = (int32_t)((j & 1) ? (q[j >> 1] & 0x0F) : ((q[j >> 1] >> 4) & 0x0F)) - 8;
      const float z = zp ? static_cast<float>(zp[g]) : 0.0f;
      o[j] = static_cast<O>((static_cast<float>(v) - z) * static_cast<float>(sd[g]));
    }
  }
}

// Stack: weight, scales, zero_points?, quant_min, quant_max, indices, [dtype?,] out, then the return value (out).
void embedding_4bit(rt::KernelRuntimeContext& ctx, rt::Span<rt::EValue*> s, bool dtype_out) {
  const size_t n = s.size();
  if (n != (dtype_out ? 9u : 8u)) return ctx.fail(rt::Error::InvalidArgument);
  const Tensor& w = s[0]->toTensor();
  const Tensor& scales = s[1]->toTensor();
  const Tensor* zp = s[2]->isTensor() ? &s[2]->toTensor() : nullptr;
  const Tensor& idx = s[5]->toTensor();
  Tensor& out = s[n - 2]->toTensor();
  const ScalarType pt = scales.scalar_type(), ot = out.scalar_type();
  bool ok = w.dim() == 2 && w.scalar_type() == ScalarType::Byte && idx.scalar_type() == ScalarType::Long &&
            (scales.dim() == 1 || scales.dim() == 2) && scales.size(0) == w.size(0) &&
            (pt == ScalarType::Float || pt == ScalarType::Half) && (ot == ScalarType::Float || ot == ScalarType::Half) &&
            (!zp || (zp->scalar_type() == pt && zp->dim() == scales.dim())) && idx.dim() + 1 == out.dim() &&
            (scales.dim() == 1 || (w.size(1) * 2) % scales.size(1) == 0);
  if (dtype_out && s[6]->isInt()) ok = ok && s[6]->toInt() == static_cast<int64_t>(ot);
  if (!dtype_out) ok = ok && pt == ot;  // .out: scales, zero points and out share one dtype
  if (!ok) return ctx.fail(rt::Error::InvalidArgument);
  executorch::aten::SizesType sizes[rt::kTensorDimensionLimit];
  for (ssize_t d = 0; d < idx.dim(); d++) sizes[d] = idx.size(d);
  sizes[out.dim() - 1] = w.size(1) * 2;
  if (rt::resize_tensor(out, {sizes, static_cast<size_t>(out.dim())}) != rt::Error::Ok)
    return ctx.fail(rt::Error::InvalidArgument);
  if (pt == ScalarType::Float && ot == ScalarType::Float)
    embed4<float, float>(w, scales, zp ? zp->const_data_ptr<float>() : nullptr, idx, out);
  else if (pt == ScalarType::Float)
    embed4<float, Half>(w, scales, zp ? zp->const_data_ptr<float>() : nullptr, idx, out);
  else if (ot == ScalarType::Float)
    embed4<Half, float>(w, scales, zp ? zp->const_data_ptr<Half>() : nullptr, idx, out);
  else
    embed4<Half, Half>(w, scales, zp ? zp->const_data_ptr<Half>() : nullptr, idx, out);
}

const rt::Kernel kKernels[] = {
    rt::Kernel("quantized_decomposed::embedding_4bit.out",
               [](rt::KernelRuntimeContext& c, rt::Span<rt::EValue*> s) { embedding_4bit(c, s, false); }),
    rt::Kernel("quantized_decomposed::embedding_4bit.dtype_out",
               [](rt::KernelRuntimeContext& c, rt::Span<rt::EValue*> s) { embedding_4bit(c, s, true); }),
};
// Into the private runtime copy (etlite's dependency, so its initialisers ran before this one).
const auto kRegistered = rt::register_kernels({kKernels, 2});

[[noreturn]] void torch_only(const char* what) {
  fprintf(stderr, "guard etlite: %s needs libtorch, which etlite's torch-free runtime does not load\n", what);
  abort();
}

using Blas = void (*)(void*, void*, void*, void*, void*, void*, void*, void*, void*, void*, void*, void*, void*,
                      size_t, size_t);

Blas blas(const char* name) {
  static void* lib = dlopen(ETLITE_TORCH_CPU, RTLD_NOW | RTLD_LOCAL);
  void* f = lib ? dlsym(lib, name) : nullptr;
  if (!f) torch_only(name);
  return reinterpret_cast<Blas>(f);
}

}  // namespace

// Fortran BLAS: 13 pointer arguments, then the hidden lengths of the two character arguments.
#define ETLITE_BLAS(name)                                                                                      \
  extern "C" void name(void* a, void* b, void* c, void* d, void* e, void* f, void* g, void* h, void* i, void* j, \
                       void* k, void* l, void* m, size_t la, size_t lb) {                                      \
    static Blas real = blas(#name);                                                                            \
    real(a, b, c, d, e, f, g, h, i, j, k, l, m, la, lb);                                                       \
  }
ETLITE_BLAS(sgemm_)
ETLITE_BLAS(dgemm_)
ETLITE_BLAS(cgemm_)
ETLITE_BLAS(zgemm_)

// _portable_lib's pybind layer (torch tensors in and out of Python): never reached through etlite.
#define ETLITE_TORCH_ONLY(id, symbol) \
  extern "C" void id() __asm__(symbol); \
  extern "C" void id() { torch_only(symbol); }
ETLITE_TORCH_ONLY(etl_make_tensor, "_ZN2at11TensorMaker11make_tensorEv")
ETLITE_TORCH_ONLY(etl_clone, "_ZN2at4_ops5clone4callERKNS_6TensorESt8optionalIN3c1012MemoryFormatEE")
ETLITE_TORCH_ONLY(etl_cast, "_ZN8pybind116detail11type_casterIN2at6TensorEvE4castERKS3_NS_19return_value_policyENS_6handleE")
ETLITE_TORCH_ONLY(etl_load, "_ZN8pybind116detail11type_casterIN2at6TensorEvE4loadENS_6handleEb")
