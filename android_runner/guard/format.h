// The Llama Guard prompt on the device: guard_format.json (written by guard/format/spec.py from guard/format/prompt.py,
// the one place the template lives), the category policy, conversation checks, prompt token ids, verdict parsing.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../../guard/runtime/pte_common.h"

namespace guard {

// Every error of the core is a Failure with a one-line message (guard.errors.GuardError): fail(), in
// guard/runtime/pte_common.h (shared with the .pte layer and etlite).

class Tokenizer;

struct Message {
  std::string role;  // "user" or "assistant"
  std::string text;  // UTF-8
};

struct Category {
  std::string code;         // stable code reported in verdicts ("S10")
  std::string name;         // "Hate"
  std::string description;  // shown to the model after the key; empty: "{name}."
  std::string prompt_value() const { return description.empty() ? name + "." : description; }
};

struct Hit {
  std::string code, name;
};

// A policy as guard.format.categories.Policy: categories (empty: the default S1-S13), exclusions, renumbering.
struct PolicySpec {
  // A category with only a code is the standard one; else {code, "", "Name. description"} as a categories JSON
  // file holds it (the name is the text before the first '.'), or {code, name, description}.
  std::vector<Category> categories;
  std::vector<std::string> excluded;
  bool renumber = false;
};

class Format {
 public:
  explicit Format(const std::string& path);  // guard_format.json
  const std::string& prompt_format() const { return prompt_format_; }
  int max_category_tokens() const { return max_category_tokens_; }
  const std::vector<std::string>& llama3_special_tokens() const { return llama3_special_; }
  const std::string& special_text(const std::string& name) const;

  // Validates a policy spec and returns the (shown key, category) pairs; standard codes are filled in.
  std::vector<std::pair<std::string, Category>> policy(const PolicySpec& spec) const;

  // guard.format.prompt.conversation: roles alternate from user, text non-empty, <= max_text_chars, valid UTF-8.
  void check_conversation(const std::vector<Message>& msgs) const;
  // The messages without invisible format characters (guard.format.prompt.INVISIBLE): what every classify path reads.
  static std::vector<Message> visible(std::vector<Message> msgs);
  std::string role_of(const std::vector<Message>& msgs) const;  // "User" / "Agent"
  // Prompt token ids (head is cacheable), as guard.format.prompt.encode.
  std::vector<int64_t> head_ids(const Tokenizer& tok, const std::vector<std::pair<std::string, Category>>& shown,
                                const std::string& role) const;
  std::vector<int64_t> body_ids(const Tokenizer& tok, const std::vector<Message>& msgs) const;
  // guard.format.verdict.parse -> decision, hits, reason
  void parse(const std::string& text, const std::vector<std::pair<std::string, Category>>& shown, std::string& decision,
             std::vector<Hit>& hits, std::string& reason) const;
  std::string strip(const std::string& s) const;  // str.strip()
  std::string official_name(const std::string& code) const;

 private:
  std::vector<int64_t> assemble(const Tokenizer& tok, const std::vector<std::pair<std::string, std::string>>& segs,
                                const std::vector<std::pair<std::string, std::string>>& values) const;
  std::string prompt_format_, category_line_, turn_;
  std::vector<std::pair<std::string, std::string>> head_, body_, special_, roles_;
  std::vector<Category> standard_;
  std::vector<std::pair<std::string, std::string>> official_;
  std::vector<std::string> default_codes_, llama3_special_;
  std::set<char32_t> whitespace_;
  size_t max_text_chars_ = 0;
  int max_category_tokens_ = 24;
};

// UTF-8 helpers: decode (false on invalid UTF-8, including surrogates), encode.
bool utf8_decode(const std::string& s, std::vector<char32_t>& out, std::vector<size_t>* offsets = nullptr);
std::string utf8_encode(char32_t c);
std::string utf8_lossy(const std::string& s);  // invalid sequences -> U+FFFD, as Python's errors="replace"
bool invisible(char32_t c);  // zero-width, bidi control, soft hyphen, BOM: guard.format.prompt.INVISIBLE
std::string py_repr(const std::string& s);  // Python's repr() of a str, for reason texts

}  // namespace guard
