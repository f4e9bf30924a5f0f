// guard::Classifier: guard/runtime/classifier.py's Guard and guard/runtime/stream.py's Stream on the device.
//
// Threading rule: one Classifier may be shared by threads; every call (classify, stream feed/close) takes the
// classifier's mutex, so calls run one at a time on the one KV cache and give the verdicts a single thread would.
// For parallel classification, open one Classifier per thread (each maps the .pte and has its own cache).
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "format.h"
#include "pte.h"
#include "tokenizer.h"

namespace guard {

struct Options {
  PolicySpec policy;
  double threshold = 0.5;
  bool block_indeterminate = true;
  bool calibrated = true;  // use calibration.json beside the .pte when present
  bool trust_tokenizer = false;  // accept a tokenizer other than the one whose sha256 the .pte records
  std::string tokenizer;   // path; empty: tokenizer.json (else tokenizer.model) beside the .pte
  std::string format;      // path; empty: guard_format.json beside the .pte
  std::string long_policy = "windows";  // conversations longer than the model: windows | last_turns | error
  int segment_checks = 4;  // cuts of a prompt judged too (segments.cpp, guard.runtime.segments); 0: none
};

// guard.runtime.long: what was applied to a conversation longer than the model (Verdict.truncation).
struct Truncation {
  std::string policy;  // "last_turns" (whole old turns dropped) or "windows" / "last_turns" (the last turn cut)
  int64_t prompt_tokens = 0, dropped_turns = 0;
  bool cut = false;  // the last turn did not fit alone: the fields below are set
  int64_t windows = 0, window_tokens = 0, chosen_window = 0, span_begin = 0, span_end = 0, context_tokens = 0;
  std::vector<double> window_p_unsafe;  // each window's p_unsafe, rounded to 4 digits as Python's round()
};

// guard.runtime.segments: the cuts of a prompt that were judged too (Verdict.segments).
struct Segments {
  int64_t checked = 0, chosen = -1;  // chosen: the cut that became the verdict; -1 (JSON null): none
  std::vector<double> p_unsafe;  // each cut's p_unsafe, rounded to 4 digits
};

struct Calibration {  // guard.eval.calibrate.Calibration.describe(): what scored p_unsafe
  double a = 1, b = 0;
  std::string sha256;  // first 16 hex digits of calibration.json's sha256
};

struct Verdict {
  std::string decision;  // safe | unsafe | indeterminate
  std::vector<Hit> categories;
  double p_unsafe = 0, margin = 0, latency_ms = 0, prefill_ms = 0;
  bool blocked = false;
  std::string role = "User", raw, reason;
  int64_t prompt_tokens = 0, reused_tokens = 0, prefilled_tokens = 0;
  std::optional<Calibration> calibration;  // none: the model's own softmax
  std::optional<Truncation> truncation;    // none: the whole conversation fit (JSON {})
  std::optional<Segments> segments;        // none: no cut was judged (JSON {})
  std::string json() const;  // the fields of guard classify --json (Verdict.to_dict)
};

class Classifier;

// guard.runtime.stream.Stream: feed(chunk) -> verdict when a check ran (after an unsafe one: that final verdict);
// close() -> the verdict for the whole response; feed() after close() is an error, as in Python.
class Stream {
 public:
  Stream(Classifier& g, std::vector<Message> conversation, int check_every, double check_every_s);
  bool feed(const std::string& utf8_bytes, Verdict& out);  // true when a verdict is returned
  Verdict close();
  bool final() const { return final_; }
  int checks() const { return checks_; }
  int64_t prefilled_tokens() const { return prefilled_; }
  int64_t reused_tokens() const { return reused_; }

 private:
  Verdict check(size_t n_tokens);
  Verdict too_long(const std::string& why);
  Classifier& g_;
  std::vector<Message> msgs_;
  int check_every_;
  double check_every_s_;
  std::string text_, pending_, checked_text_;
  bool has_checked_ = false, final_ = false, closed_ = false, has_verdict_ = false;
  Verdict verdict_;
  size_t checked_tokens_ = 0;
  int checks_ = 0;
  int64_t prefilled_ = 0, reused_ = 0;
  std::chrono::steady_clock::time_point last_;
};

class Classifier {
 public:
  Classifier(const std::string& pte, const Options& opts = {});
  Verdict classify(const std::vector<Message>& msgs);
  Verdict classify(const std::string& prompt) { return classify(std::vector<Message>{{"user", prompt}}); }
  Verdict classify(const std::string& prompt, const std::string& response) {
    return classify(std::vector<Message>{{"user", prompt}, {"assistant", response}});
  }
  std::vector<int64_t> prompt_ids(const std::vector<Message>& msgs);  // head + body, as guard.format.prompt.encode
  void invalidate() {  // forget the KV cache contents (Guard.invalidate)
    std::lock_guard<std::mutex> lock(mu_);
    cached_.clear();
  }
  std::unique_ptr<Stream> stream(const std::vector<Message>& conversation, int check_every = 16, double check_every_s = 0);
  const Tokenizer& tokenizer() const { return *tok_; }
  const Format& format() const { return *format_; }
  Pte& pte() { return *pte_; }
  std::mutex& mutex() { return mu_; }
  double load_ms() const { return load_ms_; }

 private:
  friend class Stream;
  Verdict classify_locked(const std::vector<Message>& msgs);
  Verdict classify_long(const std::vector<Message>& msgs, int64_t budget, int64_t total);
  Verdict check_segments(const std::vector<Message>& msgs, Verdict verdict);
  std::vector<std::string> segment_ends(const std::string& text) const;
  int64_t n_tokens(const std::vector<Message>& msgs) const;  // head + body
  Verdict make(const std::string& decision, std::vector<Hit> hits, double score, const std::string& raw,
               const std::string& reason = "") const;
  std::vector<float> feed(const std::vector<int64_t>& ids, int64_t& reused);
  int64_t column(int64_t token) const;
  int64_t token_of(int64_t col) const;
  std::unique_ptr<Format> format_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Pte> pte_;
  std::vector<std::pair<std::string, Category>> shown_;
  Options opts_;
  bool has_cal_ = false;
  Calibration cal_;
  int64_t safe_col_, unsafe_col_, eot_, unsafe_, newline_, s_, blank_;
  std::vector<int64_t> head_user_, head_agent_;  // policy heads, encoded once
  std::vector<int64_t> cached_;
  std::mutex mu_;
  double load_ms_ = 0;
};

std::string dir_of(const std::string& path);
double round4(double x);  // Python's round(x, 4)
double now_ms();

}  // namespace guard
