// guard::Format: the prompt template from guard_format.json (see format.h); ports of guard/format/prompt.py,
// categories.py and verdict.py's logic, with the template text itself read from the file.
#include "format.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "tokenizer.h"

namespace guard {

static const char* kSpec = "guard-format-1";

Format::Format(const std::string& path) {
  std::ifstream f(path);
  std::string fix = "write it with `python -m guard.format.spec MODEL.pte` (guard export writes it)";
  if (!f) fail("no " + path + ": the prompt template for the native runtime; " + fix);
  try {
    auto j = nlohmann::json::parse(f);
    if (j.at("spec") != kSpec) fail(path + " has spec " + j.at("spec").dump() + ", this runtime reads " + kSpec + "; re" + fix);
    prompt_format_ = j.at("prompt_format");
    category_line_ = j.at("category_line");
    turn_ = j.at("turn");
    for (auto& [k, v] : j.at("special").items()) special_.emplace_back(k, v.get<std::string>());
    for (auto& s : j.at("head")) head_.emplace_back(s.at(0), s.at(1));
    for (auto& s : j.at("body")) body_.emplace_back(s.at(0), s.at(1));
    for (auto& [k, v] : j.at("roles").items()) roles_.emplace_back(k, v.get<std::string>());
    for (auto& c : j.at("categories")) {
      standard_.push_back({c.at("code"), c.at("name"), ""});
      official_.emplace_back(c.at("code"), c.at("official_name"));
    }
    default_codes_ = j.at("default_codes").get<std::vector<std::string>>();
    for (uint32_t c : j.at("whitespace")) whitespace_.insert(static_cast<char32_t>(c));
    max_text_chars_ = j.at("max_text_chars");
    max_category_tokens_ = j.at("max_category_tokens");
    llama3_special_ = j.at("llama3_special_tokens").get<std::vector<std::string>>();
  } catch (const Failure&) {
    throw;
  } catch (const std::exception& e) {
    fail(path + " is not a valid guard_format.json (" + std::string(e.what()).substr(0, 100) + "); re" + fix);
  }
}

const std::string& Format::special_text(const std::string& name) const {
  for (const auto& [k, v] : special_)
    if (k == name) return v;
  fail("guard_format.json names no special token " + name);
}

std::string Format::official_name(const std::string& code) const {
  for (const auto& [k, v] : official_)
    if (k == code) return v;
  return code;
}

// ---- policy (guard.format.categories.Policy) ----

static bool valid_code(const std::string& c) {  // ^[A-Z][A-Z0-9_]{0,15}$
  if (c.empty() || c.size() > 16 || !(c[0] >= 'A' && c[0] <= 'Z')) return false;
  return std::all_of(c.begin(), c.end(), [](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'; });
}

std::vector<std::pair<std::string, Category>> Format::policy(const PolicySpec& spec) const {
  std::vector<Category> cats;
  if (spec.categories.empty())
    for (const auto& code : default_codes_) cats.push_back(*std::find_if(standard_.begin(), standard_.end(), [&](auto& c) { return c.code == code; }));
  for (const auto& c : spec.categories) {
    if (c.name.empty() && c.description.empty()) {
      auto it = std::find_if(standard_.begin(), standard_.end(), [&](auto& s) { return s.code == c.code; });
      if (it == standard_.end()) fail("unknown category code '" + c.code + "'");
      cats.push_back(*it);
    } else {  // guard.format.categories.load_categories: {code: "Name. description"}
      std::string value = strip(c.description.empty() ? c.name : c.description);
      if (!valid_code(c.code) || value.empty())
        fail("bad category entry '" + c.code + "': codes are like 'S15', values non-empty text");
      std::string name = c.name.empty() ? strip(value.substr(0, value.find('.'))) : c.name;
      cats.push_back({c.code, name.empty() ? c.code : name, value});
    }
  }
  std::vector<std::string> codes;
  for (const auto& c : cats) {
    if (std::find(codes.begin(), codes.end(), c.code) != codes.end()) fail("duplicate category code " + c.code);
    codes.push_back(c.code);
  }
  for (const auto& x : spec.excluded)
    if (std::find(codes.begin(), codes.end(), x) == codes.end()) fail("unknown category code to exclude: '" + x + "'");
  std::vector<std::pair<std::string, Category>> shown;
  for (const auto& c : cats)
    if (std::find(spec.excluded.begin(), spec.excluded.end(), c.code) == spec.excluded.end())
      shown.emplace_back(spec.renumber ? "S" + std::to_string(shown.size() + 1) : c.code, c);
  if (shown.empty()) fail("every category is excluded; nothing left to check");
  return shown;
}

// ---- conversation and prompt (guard.format.prompt) ----

std::string Format::role_of(const std::vector<Message>& msgs) const {
  for (const auto& [k, v] : roles_)
    if (k == msgs.back().role) return v;
  fail("role must be 'user' or 'assistant'");
}

void Format::check_conversation(const std::vector<Message>& msgs) const {
  if (msgs.empty()) fail("a conversation must be a non-empty list of messages");
  for (size_t i = 0; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    std::string at = "message " + std::to_string(i) + ": ";
    if (m.role != "user" && m.role != "assistant") fail(at + "role must be 'user' or 'assistant', not " + py_repr(m.role));
    if (m.role != (i % 2 == 0 ? "user" : "assistant"))
      fail(at + "roles must alternate user/assistant starting with user; got " + py_repr(m.role));
    std::vector<char32_t> cps;
    if (!utf8_decode(m.text, cps)) fail(at + "text is not valid UTF-8");
    if (strip(m.text).empty()) fail(at + "empty text");
    if (cps.size() > max_text_chars_)
      fail(at + std::to_string(cps.size()) + " characters is more than the " + std::to_string(max_text_chars_) + " allowed");
  }
}

// Fills {name} placeholders in one pass, as guard.format.prompt.fill (values are not re-scanned).
static std::string fill(const std::string& t, const std::vector<std::pair<std::string, std::string>>& values) {
  std::string out;
  for (size_t i = 0; i < t.size();) {
    if (t[i] == '{') {
      size_t j = i + 1;
      while (j < t.size() && (isalnum(static_cast<unsigned char>(t[j])) || t[j] == '_')) ++j;
      if (j < t.size() && t[j] == '}' && j > i + 1) {
        std::string name = t.substr(i + 1, j - i - 1);
        auto it = std::find_if(values.begin(), values.end(), [&](auto& kv) { return kv.first == name; });
        if (it != values.end()) {
          out += it->second;
          i = j + 1;
          continue;
        }
      }
    }
    out += t[i++];
  }
  return out;
}

std::vector<int64_t> Format::assemble(const Tokenizer& tok, const std::vector<std::pair<std::string, std::string>>& segs,
                                      const std::vector<std::pair<std::string, std::string>>& values) const {
  std::vector<int64_t> ids;
  for (const auto& [kind, value] : segs) {
    if (kind == "special") {
      ids.push_back(tok.special_id(special_text(value)));
    } else {
      auto part = tok.encode(fill(value, values));
      ids.insert(ids.end(), part.begin(), part.end());
    }
  }
  return ids;
}

std::vector<int64_t> Format::head_ids(const Tokenizer& tok, const std::vector<std::pair<std::string, Category>>& shown,
                                      const std::string& role) const {
  std::string cats;
  for (const auto& [key, c] : shown) cats += fill(category_line_, {{"key", key}, {"value", c.prompt_value()}});
  return assemble(tok, head_, {{"role", role}, {"categories", cats}});
}

std::vector<int64_t> Format::body_ids(const Tokenizer& tok, const std::vector<Message>& msgs) const {
  std::string turns;
  for (const auto& m : msgs) {
    std::string role;
    for (const auto& [k, v] : roles_)
      if (k == m.role) role = v;
    turns += fill(turn_, {{"role", role}, {"text", strip(m.text)}});
  }
  return assemble(tok, body_, {{"role", role_of(msgs)}, {"turns", turns}});
}

// ---- verdict text (guard.format.verdict.parse) ----

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) out.push_back(s.substr(start, i - start)), start = i + 1;
  return out;
}

static std::string upto(const std::string& s, size_t n) {  // first n code points
  std::vector<char32_t> cps;
  if (!utf8_decode(s, cps) || cps.size() <= n) return s;
  std::string out;
  for (size_t i = 0; i < n; ++i) out += utf8_encode(cps[i]);
  return out;
}

void Format::parse(const std::string& text, const std::vector<std::pair<std::string, Category>>& shown,
                   std::string& decision, std::vector<Hit>& hits, std::string& reason) const {
  hits.clear();
  reason.clear();
  std::string t = strip(text);
  std::vector<std::string> lines;
  for (auto& ln : split(t, '\n')) lines.push_back(strip(ln));
  if (lines.size() == 1 && lines[0] == "safe") {
    decision = "safe";
    return;
  }
  decision = "indeterminate";
  if (lines.empty() || lines[0] != "unsafe") {
    reason = "unparseable output " + py_repr(upto(t, 60));
    return;
  }
  if (lines.size() != 2 || lines[1].empty()) {
    reason = "'unsafe' without a category line: " + py_repr(upto(t, 60));
    return;
  }
  for (auto& k : split(lines[1], ',')) {
    std::string key = strip(k);
    auto it = std::find_if(shown.begin(), shown.end(), [&](auto& kv) { return kv.first == key; });
    if (it == shown.end()) {
      hits.clear();
      reason = "model named a category not in the policy: " + py_repr(upto(key, 20));
      return;
    }
    const Category& c = it->second;
    Hit h{c.code, c.description.empty() ? official_name(c.code) : c.name};
    if (std::none_of(hits.begin(), hits.end(), [&](auto& x) { return x.code == h.code && x.name == h.name; })) hits.push_back(h);
  }
  decision = "unsafe";
}

// ---- text ----

bool invisible(char32_t c) {  // the same set as guard.format.prompt.INVISIBLE
  return c == 0xad || c == 0x61c || c == 0x180e || (c >= 0x200b && c <= 0x200f) || (c >= 0x202a && c <= 0x202e) ||
         (c >= 0x2060 && c <= 0x2064) || (c >= 0x2066 && c <= 0x2069) || c == 0xfeff;
}

std::vector<Message> Format::visible(std::vector<Message> msgs) {
  std::vector<char32_t> cps;
  std::vector<size_t> at;
  for (auto& m : msgs) {
    at.clear();
    if (!utf8_decode(m.text, cps, &at)) continue;  // invalid UTF-8 stays as it is: check_conversation reports it
    std::string out;
    for (size_t i = 0; i < cps.size(); ++i)
      if (!invisible(cps[i])) out.append(m.text, at[i], at[i + 1] - at[i]);
    m.text = std::move(out);
  }
  return msgs;
}

bool utf8_decode(const std::string& s, std::vector<char32_t>& out, std::vector<size_t>* offsets) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || i + n > s.size()) return false;
    char32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    for (int k = 1; k < n; ++k) {
      unsigned char d = s[i + k];
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static const char32_t min_of[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (offsets) offsets->push_back(i);
    out.push_back(cp);
    i += n;
  }
  if (offsets) offsets->push_back(s.size());
  return true;
}

// Invalid UTF-8 -> U+FFFD per maximal ill-formed subpart (Unicode's practice; Python's errors="replace" and Rust's
// from_utf8_lossy, which Hugging Face tokenizers' decode uses).
std::string utf8_lossy(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    if (c < 0x80) {
      out += static_cast<char>(c), ++i;
      continue;
    }
    int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80, hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    int k = 1;  // bytes of a well-formed prefix
    while (n && k < n && i + k < s.size()) {
      unsigned char d = s[i + k];
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xbf)) break;
      ++k;
    }
    if (n && k == n) out.append(s, i, n);
    else out += "\xef\xbf\xbd";
    i += k;
  }
  return out;
}

std::string utf8_encode(char32_t c) {
  std::string o;
  if (c < 0x80) o += static_cast<char>(c);
  else if (c < 0x800) o += static_cast<char>(0xc0 | (c >> 6)), o += static_cast<char>(0x80 | (c & 0x3f));
  else if (c < 0x10000)
    o += static_cast<char>(0xe0 | (c >> 12)), o += static_cast<char>(0x80 | ((c >> 6) & 0x3f)), o += static_cast<char>(0x80 | (c & 0x3f));
  else
    o += static_cast<char>(0xf0 | (c >> 18)), o += static_cast<char>(0x80 | ((c >> 12) & 0x3f)),
        o += static_cast<char>(0x80 | ((c >> 6) & 0x3f)), o += static_cast<char>(0x80 | (c & 0x3f));
  return o;
}

std::string Format::strip(const std::string& s) const {
  std::vector<char32_t> cps;
  std::vector<size_t> off;
  if (!utf8_decode(s, cps, &off)) return s;
  size_t a = 0, b = cps.size();
  while (a < b && whitespace_.count(cps[a])) ++a;
  while (b > a && whitespace_.count(cps[b - 1])) --b;
  return s.substr(off[a], off[b] - off[a]);
}

std::string py_repr(const std::string& s) {
  bool sq = s.find('\'') != std::string::npos, dq = s.find('"') != std::string::npos;
  char q = sq && !dq ? '"' : '\'';
  std::string o(1, q);
  std::vector<char32_t> cps;
  if (!utf8_decode(s, cps)) cps.assign(s.begin(), s.end());
  for (char32_t c : cps) {
    char buf[16];
    if (c == static_cast<char32_t>(q) || c == '\\') o += '\\', o += static_cast<char>(c);
    else if (c == '\n') o += "\\n";
    else if (c == '\r') o += "\\r";
    else if (c == '\t') o += "\\t";
    else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0)) snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c)), o += buf;
    else o += utf8_encode(c);
  }
  return o + q;
}

}  // namespace guard
