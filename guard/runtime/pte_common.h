// What etlite (etlite.cpp) and the native guard (android_runner/guard/, guard_runner) share without ExecuTorch's
// headers: the one-line error type and a metadata value. pte_program.h is the shared .pte layer itself.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace guard {

// Every error of the native code is a Failure with a one-line message (guard.errors.GuardError).
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A conversation (or positions) longer than the model allows (guard.errors.SequenceTooLong).
struct SequenceTooLong : Failure {
  using Failure::Failure;
};

[[noreturn]] inline void fail(const std::string& msg) { throw Failure(msg); }

// One output of a constant method (the .pte's metadata): an int (bools too), a double or a string.
struct MetaValue {
  enum class Kind { Int, Double, String } kind = Kind::Int;
  int64_t i = 0;
  double d = 0;
  std::string s;
  bool is_string() const { return kind == Kind::String; }
};

}  // namespace guard
