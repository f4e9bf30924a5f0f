// etlite: a C API over ExecuTorch's C++ runtime for guard.runtime.pte, called through ctypes.
//
// Why: the pip runtime's Python bindings take and return torch tensors only, so `import torch` (1-4 s) was on
// every `guard classify`. This library is compiled once against the executorch wheel's headers and its
// _portable_lib (which exports the runtime symbols; android_runner/ builds the same way) and passes plain int64 /
// float buffers. It also turns on what the bindings cannot: XNNPACK's weight cache (the methods `prefill*` and
// `decode` then share one packed copy of the weights instead of one each) and a global XNNPACK workspace.
// Loading, planned memory and method calls are pte_program.h, shared with android_runner's native guard.
//
// Build: guard/runtime/etlite.py (g++, cached under GUARD_HOME). Every function returns 0 / a handle on success
// and writes a one-line message into err otherwise.

#include <cstdio>

#include "pte_program.h"

namespace {

void say(char* err, size_t n, const std::string& msg) {
  if (err && n) snprintf(err, n, "%s", msg.c_str());
}

// f() with its exception as a one-line message in err; `bad` is returned then.
template <typename F, typename T>
T guarded(char* err, size_t n, T bad, F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    say(err, n, e.what());
  } catch (...) {
    say(err, n, "unknown error");
  }
  return bad;
}

guard::PteProgram* prog(void* h) { return static_cast<guard::PteProgram*>(h); }

}  // namespace

extern "C" {

// weight_cache: one packed copy of each weight for all methods (and a global XNNPACK workspace); packed_path
// (optional): keep the packed weights in that file for later processes.
void* etl_open(const char* path, int weight_cache, const char* packed_path, char* err, size_t n) {
  return guarded(err, n, static_cast<void*>(nullptr), [&]() -> void* {
    guard::set_xnnpack_options(weight_cache != 0, weight_cache ? 2 : 0);
    auto* p = new guard::PteProgram(path);
    if (weight_cache && packed_path && *packed_path) p->set_packed_path(packed_path);
    return static_cast<void*>(p);
  });
}

// XNNPACK's current weight_cache_enabled (1/0), or -1 when it cannot be read.
int etl_weight_cache_enabled() { return guard::xnnpack_weight_cache_enabled(); }

// XNNPACK's threadpool size (n > 0 resets it); returns the size in use.
int etl_threads(int n) { return guard::threadpool_size(n); }

void etl_close(void* h) { delete prog(h); }

// The planned-memory arenas (the KV cache and the methods' activations, shared by every method): their number, and
// arena i's address and size. guard.runtime.prefix snapshots them after the policy head is prefilled.
int etl_num_arenas(void* h) { return static_cast<int>(prog(h)->arenas().size()); }

uint8_t* etl_arena(void* h, int i, size_t* size) {
  const auto& a = prog(h)->arenas().at(i);
  *size = a->size;
  return a->data;
}

int etl_num_methods(void* h) { return static_cast<int>(prog(h)->method_names().size()); }

const char* etl_method_name(void* h, int i) { return prog(h)->method_names().at(i).c_str(); }

int etl_load(void* h, const char* name, char* err, size_t n) {
  return guarded(err, n, -1, [&] { return prog(h)->method(name), 0; });
}

// A constant method: its outputs as ints (kinds[i] = 0), a string (kinds[i] = 1, copied into text) or a double
// (kinds[i] = 2, in floats). Returns the number of outputs, or -1.
int etl_constant(void* h, const char* name, int64_t* ints, double* floats, int* kinds, int max_out, char* text,
                 size_t text_len, char* err, size_t n) {
  return guarded(err, n, -1, [&] {
    auto values = prog(h)->constant(name);
    int count = static_cast<int>(std::min<size_t>(values.size(), max_out));
    for (int i = 0; i < count; ++i) {
      const auto& v = values[i];
      if (v.kind == guard::MetaValue::Kind::Int) kinds[i] = 0, ints[i] = v.i;
      else if (v.kind == guard::MetaValue::Kind::Double) kinds[i] = 2, floats[i] = v.d;
      else kinds[i] = 1, snprintf(text, text_len, "%s", v.s.c_str());
    }
    return count;
  });
}

// Run a guard method (tokens[1, T], pos[T], last[1][, keys[1, S] when S > 0]) -> logits[1, V]: copies V floats into
// out. Returns V, or -1.
int etl_step(void* h, const char* name, const int64_t* tokens, const int64_t* pos, int T, int64_t last,
             const float* keys, int S, float* out, int out_len, char* err, size_t n) {
  return guarded(err, n, -1, [&] {
    size_t v = 0;
    const float* logits = prog(h)->step(name, tokens, pos, T, last, v, keys, S);
    if (v > static_cast<size_t>(out_len)) guard::fail("logits buffer too small");
    memcpy(out, logits, sizeof(float) * v);
    return static_cast<int>(v);
  });
}

}  // extern "C"
