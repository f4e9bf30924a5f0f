// Declarations shared by guard_runner.cpp (the runtime part) and support.cpp (arguments, prompts, JSON, stats).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "guard/pte.h"  // guard::Pte, Failure and fail(), shared with the native core and etlite

namespace guard {

// guard/format/prompt.py: the prompt format the .pte must declare.
inline constexpr const char* kPromptFormat = "llama-guard-3";
// guard/bench/schema.py, guard/bench/host.py, guard/classifier.py, guard/bench/prompts.py
inline constexpr const char* kSchema = "guard-bench-1";
inline constexpr int kDecodeTokens = 16;
inline constexpr int kMaxCategoryTokens = 24;
inline constexpr const char* kPromptsFile = "guard_prompts.txt";
inline constexpr const char* kPromptsFormat = "guard-prompts-1";

// An ordered JSON value: enough for the stats document.
class Json {
 public:
  enum class Kind { Null, Bool, Int, Double, String, Array, Object };
  Json() = default;
  Json(bool b) : kind_(Kind::Bool), b_(b) {}
  Json(int i) : kind_(Kind::Int), i_(i) {}
  Json(int64_t i) : kind_(Kind::Int), i_(i) {}
  Json(double d) : kind_(Kind::Double), d_(d) {}
  Json(const char* s) : kind_(Kind::String), s_(s) {}
  Json(std::string s) : kind_(Kind::String), s_(std::move(s)) {}
  static Json array(std::vector<Json> items);
  Json& add(const std::string& key, Json value);  // object member (turns a null into an object)
  Json& push(Json value);                         // array element
  Kind kind() const { return kind_; }
  int64_t as_int() const { return kind_ == Kind::Double ? static_cast<int64_t>(d_) : i_; }
  double as_double() const { return kind_ == Kind::Int ? static_cast<double>(i_) : d_; }
  const std::string& as_string() const { return s_; }
  const Json& at(const std::string& key) const;
  std::string str(int indent = -1) const;

 private:
  void write(std::string& out, int indent, int depth) const;
  Kind kind_ = Kind::Null;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

struct Verdict {
  std::string decision;
  double p_unsafe = 0, prefill_ms = 0, latency_ms = 0;
  size_t prefilled_tokens = 0;
  int category_tokens = 0;
};

struct Prompts {
  std::vector<int64_t> warm;
  std::map<int, std::vector<int64_t>> first, second;
  // "text ..." lines: the message texts (JSON strings), for runners that tokenize on the device
  std::string warm_text;
  std::map<int, std::string> first_text, second_text;
  std::string source = "token ids from the host (guard_prompts.txt)";
};

struct Args {
  std::string model, out, command;
  int threads = 0, runs = 5, warmup = 1;
  std::vector<int> prompt_tokens{16, 40, 128, 256};
};

// support.cpp
int parse_args(int argc, char** argv, Args& a);  // -1: go on; else the exit code (help, usage error)
Prompts read_prompts(const std::string& path, const std::vector<int>& lengths);
std::string dir_of(const std::string& path);
double now_ms();
double peak_rss_mb();
double round_to(double x, int digits);
double p_unsafe(float logit_safe, float logit_unsafe);
int64_t argmax(const std::vector<float>& v);
Json et_stats(double load0, double load1, double start, double prompt_end, double first_token, double end,
              int64_t n_prompt, int64_t n_generated, double sampling_ms = 0.0);
Json summary(const std::vector<Json>& records, const std::vector<int>& lengths);
Json machine(int threads);
Json versions();
Json config(const Args& a, int decode_tokens);
Json meta_json(const Pte& pte);  // the metadata as PteRunner.meta: the required keys, list-valued ones as lists

}  // namespace guard
