// Conversations longer than the model: guard/runtime/long.py's policies in the native core (same windows, same
// choice, same truncation record). Options.long_policy:
//   windows (default)  keep the latest whole turns that fit; if the judged turn alone does not fit, classify
//                      overlapping windows of it (stride 3/4 of a window, the last ending at the end of the text)
//                      and keep the most unsafe one; a response's windows follow the tail of the user's prompt;
//   last_turns         the same first step; a last turn that does not fit alone is cut to its last tokens;
//   error              refuse with a one-line SequenceTooLong.
#include <cstdio>
#include <cstdlib>

#include "classifier.h"

namespace guard {

static const int64_t kMargin = 16;  // MARGIN: tokens kept free, decode/encode round trips at window edges

double round4(double x) {  // Python's round(x, 4): the exact value rounded half to even, as printf does
  char buf[64];
  snprintf(buf, sizeof buf, "%.4f", x);
  return strtod(buf, nullptr);
}

static std::vector<std::pair<int64_t, int64_t>> windows_of(int64_t n, int64_t size) {  // long._windows
  if (n <= size) return {{0, n}};
  int64_t stride = std::max<int64_t>(size * 3 / 4, 1);
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (int64_t s = 0; s < n - size; s += stride) spans.push_back({s, s + size});
  spans.push_back({n - size, n});
  return spans;
}

int64_t Classifier::n_tokens(const std::vector<Message>& msgs) const {
  const auto& head = format_->role_of(msgs) == "User" ? head_user_ : head_agent_;
  return static_cast<int64_t>(head.size() + format_->body_ids(*tok_, msgs).size());
}

Verdict Classifier::classify_long(const std::vector<Message>& msgs, int64_t budget, int64_t total) {
  const std::string& policy = opts_.long_policy;
  if (policy == "error")
    throw SequenceTooLong("conversation needs " + std::to_string(total) + " tokens, more than the model's maximum of " +
                          std::to_string(budget) + " for the prompt; shorten it, or use the 'windows' or 'last_turns' "
                          "long-input policy");
  int64_t n = static_cast<int64_t>(msgs.size());
  int64_t last = n - (msgs.back().role == "assistant" ? 2 : 1);  // the smallest suffix starting at a user turn
  for (int64_t start = 0; start <= last; start += 2) {
    std::vector<Message> suffix(msgs.begin() + start, msgs.end());
    if (n_tokens(suffix) <= budget - kMargin) {
      Verdict v = classify_locked(suffix);
      v.truncation = Truncation{"last_turns", total, start};
      v.prompt_tokens = total;
      return v;
    }
  }
  std::vector<Message> tail(msgs.begin() + last, msgs.end());  // [user] or [user, assistant]: too long alone
  const Tokenizer& tok = *tok_;
  std::vector<Message> context;
  int64_t room;
  if (tail.size() == 2) {  // keep at most a quarter of the room for the end of the user's prompt
    room = budget - kMargin - n_tokens({{"user", "x"}, {"assistant", "x"}});
    auto user_ids = tok.encode(tail[0].text);
    if (n_tokens({tail[0]}) > budget / 4) {
      size_t keep = static_cast<size_t>(std::max<int64_t>(room / 4, 1));
      if (keep < user_ids.size()) user_ids.erase(user_ids.begin(), user_ids.end() - keep);
    }
    std::string text = format_->strip(tok.decode(user_ids));
    context.push_back({"user", text.empty() ? "x" : text});
  } else {
    room = budget - kMargin - n_tokens({{"user", "x"}});
  }
  int64_t context_tokens = context.empty() ? 0 : static_cast<int64_t>(tok.encode(context[0].text).size());
  int64_t size = room - context_tokens;
  if (size < 16) fail("max_seq_len leaves " + std::to_string(size) + " tokens for the text: too small to classify windows");
  auto ids = tok.encode(tail.back().text);
  int64_t len = static_cast<int64_t>(ids.size());
  auto spans = policy == "windows" ? windows_of(len, size)
                                   : std::vector<std::pair<int64_t, int64_t>>{{std::max<int64_t>(len - size, 0), len}};
  Truncation t{policy, total, last, true, static_cast<int64_t>(spans.size()), size};
  t.context_tokens = context_tokens;
  Verdict best;
  for (size_t i = 0; i < spans.size(); ++i) {
    auto [a, b] = spans[i];
    std::string text = format_->strip(tok.decode(std::vector<int64_t>(ids.begin() + a, ids.begin() + b)));
    std::vector<Message> window(context);
    window.push_back({tail.back().role, text.empty() ? "x" : text});
    Verdict v = classify_locked(window);
    t.window_p_unsafe.push_back(round4(v.p_unsafe));
    if (i == 0 || v.p_unsafe > best.p_unsafe) best = v, t.chosen_window = static_cast<int64_t>(i), t.span_begin = a, t.span_end = b;
  }
  best.truncation = t;
  best.prompt_tokens = total;
  return best;
}

}  // namespace guard
