// guard::Classifier and guard::Stream: ports of guard/runtime/classifier.py and guard/runtime/stream.py.
#include "classifier.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sha256.h"

namespace guard {

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash ? slash : 1);
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

static bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static double sigmoid_unsafe(double logit_safe, double logit_unsafe) {  // guard.format.verdict.p_unsafe
  double d = logit_safe - logit_unsafe;
  return d > -700 ? 1.0 / (1.0 + std::exp(d)) : 1.0;
}

std::string Verdict::json() const {
  nlohmann::ordered_json j, cats = nlohmann::ordered_json::array();
  for (const auto& h : categories) cats.push_back({{"code", h.code}, {"name", h.name}});
  j["decision"] = decision;
  j["categories"] = cats;
  j["p_unsafe"] = p_unsafe;
  j["blocked"] = blocked;
  j["role"] = role;
  j["raw"] = raw;
  j["reason"] = reason;
  j["prompt_tokens"] = prompt_tokens;
  j["latency_ms"] = latency_ms;
  j["timings"] = {{"prefill_ms", prefill_ms}, {"reused_tokens", reused_tokens}, {"prefilled_tokens", prefilled_tokens}};
  j["margin"] = margin;
  j["calibration"] = nullptr;
  if (calibration) j["calibration"] = {{"a", calibration->a}, {"b", calibration->b}, {"sha256", calibration->sha256}};
  j["truncation"] = nlohmann::ordered_json::object();
  if (truncation) {  // guard.runtime.long's record, in its field order
    const Truncation& t = *truncation;
    auto& r = j["truncation"];
    r["policy"] = t.policy;
    r["prompt_tokens"] = t.prompt_tokens;
    r["dropped_turns"] = t.dropped_turns;
    if (t.cut) {
      r["windows"] = t.windows;
      r["window_tokens"] = t.window_tokens;
      r["chosen_window"] = t.chosen_window;
      r["chosen_span"] = {t.span_begin, t.span_end};
      r["window_p_unsafe"] = t.window_p_unsafe;
      r["context_tokens"] = t.context_tokens;
    }
  }
  j["segments"] = nlohmann::ordered_json::object();
  if (segments) {  // guard.runtime.segments' record, in its field order
    j["segments"]["checked"] = segments->checked;
    j["segments"]["chosen"] = segments->chosen < 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(segments->chosen);
    j["segments"]["p_unsafe"] = segments->p_unsafe;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Classifier::Classifier(const std::string& path, const Options& opts) : opts_(opts) {
  double t0 = now_ms();
  if (!(opts.threshold >= 0.0 && opts.threshold <= 1.0))
    fail("threshold must be in [0, 1], got " + std::to_string(opts.threshold));
  if (opts.segment_checks < 0) fail("segment_checks must be a whole number >= 0, got " + std::to_string(opts.segment_checks));
  if (opts.long_policy != "windows" && opts.long_policy != "last_turns" && opts.long_policy != "error")
    fail("unknown long-input policy '" + opts.long_policy + "' (choose from windows, last_turns, error)");
  pte_ = std::make_unique<Pte>(path);
  std::string dir = dir_of(path);
  format_ = std::make_unique<Format>(opts.format.empty() ? dir + "/guard_format.json" : opts.format);
  if (pte_->str("get_prompt_format") != format_->prompt_format())
    fail(path + " expects prompt format '" + pte_->str("get_prompt_format") + "', not '" + format_->prompt_format() + "'");
  std::string tp = opts.tokenizer;
  if (tp.empty()) {
    tp = is_file(dir + "/tokenizer.json") ? dir + "/tokenizer.json" : dir + "/tokenizer.model";
    if (!is_file(tp)) fail("no tokenizer in " + dir + " (expected tokenizer.json or tokenizer.model)");
  }
  if (pte_->has("get_tokenizer_sha256") && !opts.trust_tokenizer) {  // guard.runtime.pte.check_tokenizer_digest
    std::string want = pte_->str("get_tokenizer_sha256"), have = file_sha256(tp);
    if (have != want)
      fail(tp + " is not the tokenizer " + path.substr(path.rfind('/') + 1) + " was exported with (sha256 " +
           (have.empty() ? "unreadable" : have.substr(0, 12)) + ", expected " + want.substr(0, 12) +
           "); restore it, or trust it explicitly: option trust_tokenizer (Java: GuardOptions.trustTokenizer)");
  }
  tok_ = std::make_unique<Tokenizer>(tp, *format_);
  const Tokenizer& t = *tok_;
  eot_ = t.special_id(format_->special_text("eot"));
  unsafe_ = t.single_id("unsafe");
  newline_ = t.single_id("\n");
  s_ = t.single_id("S");
  blank_ = t.single_id("\n\n");
  std::pair<const char*, int64_t> ids[] = {{"bos", t.special_id(format_->special_text("bos"))}, {"eot", eot_},
                                           {"safe", t.single_id("safe")}, {"unsafe", unsafe_}, {"newline", newline_},
                                           {"blank", blank_}, {"s", s_}};
  for (auto [k, id] : ids)  // guard.runtime.pte.check_tokenizer
    if (id != pte_->num(std::string("get_") + k + "_id"))
      fail("tokenizer " + tp + " disagrees with the model's " + k + " token id");
  safe_col_ = column(ids[2].second);
  unsafe_col_ = column(unsafe_);
  if (safe_col_ < 0 || unsafe_col_ < 0 || column(eot_) < 0) fail("the model's output vocabulary lacks a verdict token");
  shown_ = format_->policy(opts.policy);
  head_user_ = format_->head_ids(t, shown_, "User");
  head_agent_ = format_->head_ids(t, shown_, "Agent");
  std::string cal = dir + "/calibration.json";
  if (opts.calibrated && is_file(cal)) {  // guard.eval.calibrate.load
    const double max_a = 20, max_b = 20;  // MAX_A, MAX_B
    try {
      std::ifstream f(cal);
      auto j = nlohmann::json::parse(f);
      cal_.a = j.at("a").get<double>();
      cal_.b = j.at("b").get<double>();
    } catch (const std::exception& e) {
      fail(cal + " is not a valid calibration file; delete it or refit with `guard calibrate`");
    }
    if (!std::isfinite(cal_.a) || !std::isfinite(cal_.b) || !(cal_.a > 0 && cal_.a <= max_a) || std::fabs(cal_.b) > max_b)
      fail(cal + " has an unusable calibration; a must be in (0, 20] and |b| at most 20");
    cal_.sha256 = file_sha256(cal).substr(0, 16);
    has_cal_ = true;
  }
  load_ms_ = now_ms() - t0;
}

int64_t Classifier::column(int64_t token) const {
  const auto& ids = pte_->output_ids();
  if (ids.empty()) return token;
  auto it = std::find(ids.begin(), ids.end(), token);
  return it == ids.end() ? -1 : it - ids.begin();
}

int64_t Classifier::token_of(int64_t col) const {
  const auto& ids = pte_->output_ids();
  return ids.empty() ? col : ids.at(col);
}

std::vector<int64_t> Classifier::prompt_ids(const std::vector<Message>& in) {
  auto msgs = Format::visible(in);
  format_->check_conversation(msgs);
  std::vector<int64_t> ids = format_->role_of(msgs) == "User" ? head_user_ : head_agent_;
  auto body = format_->body_ids(*tok_, msgs);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<float> Classifier::feed(const std::vector<int64_t>& ids, int64_t& reused) {  // Guard._feed
  size_t keep = 0;
  while (keep < cached_.size() && keep + 1 < ids.size() && cached_[keep] == ids[keep]) ++keep;
  cached_.clear();  // unknown if the runner fails midway
  auto logits = pte_->prefill(std::vector<int64_t>(ids.begin() + keep, ids.end()), keep);
  cached_ = ids;
  reused = static_cast<int64_t>(keep);
  return logits;
}

Verdict Classifier::classify(const std::vector<Message>& msgs) {
  std::lock_guard<std::mutex> lock(mu_);
  double t0 = now_ms();
  Verdict v = check_segments(msgs, classify_locked(msgs));  // the whole verdict, unless a cut was judged unsafe
  if (v.segments) v.latency_ms = now_ms() - t0;
  return v;
}

Verdict Classifier::classify_locked(const std::vector<Message>& in) {
  double t0 = now_ms();
  auto msgs = Format::visible(in);
  format_->check_conversation(msgs);
  std::string role = format_->role_of(msgs);
  const auto& head = role == "User" ? head_user_ : head_agent_;
  auto body = format_->body_ids(*tok_, msgs);
  int64_t n_head = head.size(), n_body = body.size();
  int64_t needed = n_head + n_body + 1 + 3 + format_->max_category_tokens();
  if (needed > pte_->max_seq_len()) {  // a documented policy instead of an error (long.cpp, guard/runtime/long.py)
    Verdict v = classify_long(msgs, pte_->max_seq_len() - (needed - n_head - n_body), n_head + n_body);
    v.latency_ms = now_ms() - t0;
    return v;
  }
  std::vector<int64_t> ids(head);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(blank_);  // the model's first generated token is "\n\n"; the verdict is read after it
  double s = now_ms();
  int64_t reused = 0;
  auto logits = feed(ids, reused);
  double prefill_ms = now_ms() - s;
  double ls = logits.at(safe_col_), lu = logits.at(unsafe_col_);
  double margin = lu - ls;
  double score = has_cal_ ? [&] { double z = cal_.a * margin + cal_.b; return z > -700 ? 1.0 / (1.0 + std::exp(-z)) : 0.0; }()
                          : sigmoid_unsafe(ls, lu);
  Verdict v;
  int64_t top = std::max_element(logits.begin(), logits.end()) - logits.begin();  // first maximum, as torch.argmax
  int64_t pos = ids.size();
  if (top != safe_col_ && top != unsafe_col_) {
    std::string token = tok_->decode({token_of(top)});
    v = make("indeterminate", {}, score, token, "first token is " + py_repr(token) + ", not safe/unsafe");
  } else if (score < opts_.threshold) {
    v = make("safe", {}, score, "safe");
  } else {  // "unsafe", "\n", "S" forced as one chunk; the rest decoded greedily until end of turn
    std::vector<int64_t> out{unsafe_, newline_, s_};
    logits = pte_->prefill(out, pos);
    cached_.insert(cached_.end(), out.begin(), out.end());
    pos += out.size();
    bool ended = false;
    for (int i = 0; i < format_->max_category_tokens(); ++i) {
      int64_t next = token_of(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (next == eot_) {
        ended = true;
        break;
      }
      out.push_back(next);
      logits = pte_->decode(next, pos++);
      cached_.push_back(next);
    }
    std::string raw = tok_->decode(out);
    if (!ended) {
      v = make("indeterminate", {}, score, raw, "no end of turn after the category list");
    } else {
      std::string decision, reason;
      std::vector<Hit> hits;
      format_->parse(raw, shown_, decision, hits, reason);
      v = make(decision, hits, score, raw, reason);
    }
  }
  v.margin = margin;
  v.role = role;
  v.prompt_tokens = n_head + n_body;
  v.prefill_ms = prefill_ms;
  v.reused_tokens = reused;
  v.prefilled_tokens = static_cast<int64_t>(ids.size()) - reused;
  v.latency_ms = now_ms() - t0;
  return v;
}

Verdict Classifier::make(const std::string& decision, std::vector<Hit> hits, double score, const std::string& raw,
                         const std::string& reason) const {
  Verdict v;
  v.decision = decision;
  v.categories = std::move(hits);
  v.p_unsafe = score;
  if (has_cal_) v.calibration = cal_;
  v.blocked = decision == "unsafe" || (decision == "indeterminate" && opts_.block_indeterminate);
  v.raw = raw;
  v.reason = reason;
  return v;
}

std::unique_ptr<Stream> Classifier::stream(const std::vector<Message>& conversation, int check_every, double check_every_s) {
  return std::make_unique<Stream>(*this, conversation, check_every, check_every_s);
}

// ---- streaming (guard.runtime.stream.Stream) ----

Stream::Stream(Classifier& g, std::vector<Message> msgs, int check_every, double check_every_s)
    : g_(g), msgs_(Format::visible(std::move(msgs))), check_every_(check_every), check_every_s_(check_every_s) {
  g.format().check_conversation(msgs_);
  if (msgs_.back().role != "user") fail("a streamed response answers a conversation that ends with a user turn");
  if (check_every <= 0 && check_every_s <= 0) fail("give check_every (tokens) or check_every_s (seconds)");
  last_ = std::chrono::steady_clock::now();
}

// The longest prefix of `pending` that is complete UTF-8; a split character at the end waits for its bytes.
static std::string take_complete(std::string& pending) {
  std::vector<char32_t> cps;
  if (utf8_decode(pending, cps)) return std::exchange(pending, "");
  for (size_t back = 1; back <= 3 && back <= pending.size(); ++back) {
    size_t cut = pending.size() - back;
    unsigned char lead = pending[cut];
    int need = (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 0;
    if (need > static_cast<int>(back) && utf8_decode(pending.substr(0, cut), cps)) {
      std::string done = pending.substr(0, cut);
      pending.erase(0, cut);
      return done;
    }
  }
  fail("streamed bytes are not valid UTF-8");
}

bool Stream::feed(const std::string& bytes, Verdict& out) {
  std::lock_guard<std::mutex> lock(g_.mutex());
  if (closed_) fail("feed() after close(): the stream is finished; start a new one");
  if (final_) {
    out = verdict_;
    return true;
  }
  pending_ += bytes;
  text_ += take_complete(pending_);
  if (g_.format().strip(text_).empty()) return false;
  size_t n = g_.tokenizer().encode(text_).size();
  bool due_tokens = check_every_ > 0 && n - checked_tokens_ >= static_cast<size_t>(check_every_);
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_).count();
  bool due_time = check_every_s_ > 0 && elapsed >= check_every_s_;
  if (!due_tokens && !due_time) return false;
  out = check(n);
  return true;
}

Verdict Stream::close() {
  std::lock_guard<std::mutex> lock(g_.mutex());
  if (final_) {
    closed_ = true;
    return verdict_;
  }
  if (!pending_.empty()) fail("the stream ended inside a multi-byte UTF-8 character");
  if (g_.format().strip(text_).empty()) fail("empty response: nothing to classify");
  Verdict v = has_checked_ && text_ == checked_text_ ? verdict_ : check(g_.tokenizer().encode(text_).size());
  final_ = closed_ = true;
  return v;
}

Verdict Stream::check(size_t n_tokens) {
  auto msgs = msgs_;
  msgs.push_back({"assistant", text_});
  Verdict v;
  try {
    v = g_.classify_locked(msgs);
  } catch (const SequenceTooLong& e) {
    v = too_long(std::to_string(n_tokens) + " tokens: " + e.what());
  }
  if (v.truncation && v.decision != "unsafe")  // the long-input policy judged only part of it: not a pass
    v = too_long(std::to_string(n_tokens) + " tokens: the conversation needs more than the model's maximum of " +
                 std::to_string(g_.pte().max_seq_len()) + " positions");
  checks_++;
  prefilled_ += v.prefilled_tokens;
  reused_ += v.reused_tokens;
  checked_tokens_ = n_tokens, checked_text_ = text_, has_checked_ = true, last_ = std::chrono::steady_clock::now();
  verdict_ = v, has_verdict_ = true;
  if (v.decision == "unsafe") final_ = true;
  return v;
}

Verdict Stream::too_long(const std::string& why) {
  Verdict v = g_.make("indeterminate", {}, has_verdict_ ? verdict_.p_unsafe : 0.5, "", "response too long to check (" + why + ")");
  v.role = "Agent";
  final_ = true;
  return v;
}

}  // namespace guard
