// Segment checks: guard/runtime/segments.py in the native core (same cuts, same choice, same record). A prompt that
// fits the model and is not judged unsafe whole is also judged cut at up to Options.segment_checks (default 4) of its
// ends: a line break, or '.', '?' or '!' followed by whitespace. The most unsafe cut judged unsafe is the verdict.
// Byte positions stand for Python's character positions: every end is an ASCII byte, never inside a UTF-8 sequence.
#include "classifier.h"

namespace guard {

static bool space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::vector<std::string> Classifier::segment_ends(const std::string& text) const {  // segments.ends
  std::string whole = format_->strip(text);
  std::vector<std::string> cuts;
  for (size_t i = 1; i < text.size(); ++i) {
    char p = text[i - 1];
    if (text[i] == '\n' || (space(text[i]) && (p == '.' || p == '?' || p == '!'))) {
      std::string cut = format_->strip(text.substr(0, i));
      if (!cut.empty() && cut != whole && (cuts.empty() || cuts.back() != cut)) cuts.push_back(cut);
    }
  }
  size_t n = cuts.size(), k = static_cast<size_t>(opts_.segment_checks);
  if (n > k) {
    std::vector<std::string> spread;
    for (size_t j = 0; j < k; ++j) spread.push_back(cuts[j * n / k]);
    cuts.swap(spread);
  }
  return cuts;
}

Verdict Classifier::check_segments(const std::vector<Message>& in, Verdict verdict) {  // segments.check_segments
  if (opts_.segment_checks <= 0 || verdict.decision == "unsafe" || verdict.truncation) return verdict;
  auto msgs = Format::visible(in);
  if (msgs.empty() || msgs.back().role != "user") return verdict;
  auto cuts = segment_ends(msgs.back().text);
  if (cuts.empty()) return verdict;
  Segments seg;
  seg.checked = static_cast<int64_t>(cuts.size());
  std::optional<Verdict> best;
  for (size_t i = 0; i < cuts.size(); ++i) {
    std::vector<Message> cut(msgs.begin(), msgs.end() - 1);
    cut.push_back({"user", cuts[i]});
    Verdict v = classify_locked(cut);
    seg.p_unsafe.push_back(round4(v.p_unsafe));
    if (v.decision == "unsafe" && (!best || v.p_unsafe > best->p_unsafe)) best = v, seg.chosen = static_cast<int64_t>(i);
  }
  Verdict out = best ? *best : verdict;
  out.segments = seg;
  out.prompt_tokens = verdict.prompt_tokens;
  return out;
}

}  // namespace guard
