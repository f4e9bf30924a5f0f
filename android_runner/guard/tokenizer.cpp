// guard::Tokenizer over pytorch/tokenizers (see tokenizer.h).
#include "tokenizer.h"

#include <pytorch/tokenizers/hf_tokenizer.h>
#include <pytorch/tokenizers/tiktoken.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "format.h"

namespace guard {

namespace tk = tokenizers;

namespace {

// The Llama 3 pre-tokenizer pattern, with the `\s+(?!\S)` alternative that pytorch/tokenizers' default Tiktoken
// pattern leaves out (RE2 has no lookahead; the library's PCRE2 fallback has). It is the pattern of the
// tokenizer.json that guard/format/tokenizer.py converts tokenizer.model to.
const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Exposes the library's protected special-token-aware encoder with an empty allow-list: the whole text goes
// through the pre-tokenizer and BPE, so no special token can come out of it.
template <typename Base>
struct Plain : Base {
  using Base::Base;
  std::vector<uint64_t> plain(const std::string& text) const {
    static const auto none = tk::detail::build_token_map(std::vector<std::pair<std::string, uint64_t>>{});
    auto r = this->encode_with_special_token_(text, *none);
    if (!r.ok()) fail("the tokenizer cannot encode this text");
    return std::move(r->first);
  }
  std::optional<uint64_t> special(const std::string& text) const {
    if (!this->special_token_map_) return std::nullopt;
    return this->special_token_map_->tryGetInteger(text);
  }
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<Plain<tk::HFTokenizer>> hf;
  std::unique_ptr<Plain<tk::Tiktoken>> tt;
  std::vector<std::string> added;  // non-special added tokens (matched in text, as Hugging Face does)

  std::vector<uint64_t> plain(const std::string& s) const { return hf ? hf->plain(s) : tt->plain(s); }
  const tk::Tokenizer& base() const { return hf ? static_cast<const tk::Tokenizer&>(*hf) : *tt; }
};

Tokenizer::Tokenizer(const std::string& path, const Format& format) : impl_(new Impl), source_(path) {
  std::ifstream probe(path);
  if (!probe) fail("tokenizer not found: " + path);
  if (ends_with(path, ".model")) {
    impl_->tt = std::make_unique<Plain<tk::Tiktoken>>(kLlama3Pattern, format.llama3_special_tokens(), 0, 1);
    if (impl_->tt->load(path) != tk::Error::Ok) fail("cannot read " + path + " as a Llama 3 tiktoken file");
    if (impl_->tt->vocab_size() != 128256)
      fail(path + " is not a Llama 3 tokenizer (" + std::to_string(impl_->tt->vocab_size()) + " tokens)");
    return;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(probe);
    for (const auto& t : j.at("added_tokens"))
      if (!t.value("special", false)) impl_->added.push_back(t.at("content").get<std::string>());
  } catch (const std::exception& e) {
    fail("cannot read " + path + ": not a tokenizer.json (" + std::string(e.what()).substr(0, 80) + ")");
  }
  impl_->hf = std::make_unique<Plain<tk::HFTokenizer>>();
  if (impl_->hf->load(path) != tk::Error::Ok) fail("cannot read " + path + " as a Hugging Face tokenizer.json");
}

Tokenizer::~Tokenizer() = default;

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  auto add = [&](const std::string& part) {
    if (part.empty()) return;
    for (uint64_t id : impl_->plain(part)) ids.push_back(static_cast<int64_t>(id));
  };
  size_t start = 0, i = 0;
  while (i < text.size() && !impl_->added.empty()) {  // leftmost-longest non-special added token
    size_t best = 0;
    const std::string* hit = nullptr;
    for (const auto& a : impl_->added)
      if (a.size() > best && text.compare(i, a.size(), a) == 0) best = a.size(), hit = &a;
    if (!hit) {
      ++i;
      continue;
    }
    add(text.substr(start, i - start));
    ids.push_back(special_id(*hit));
    i += best;
    start = i;
  }
  add(text.substr(start));
  return ids;
}

int64_t Tokenizer::special_id(const std::string& text) const {
  auto r = impl_->hf ? impl_->hf->special(text) : impl_->tt->special(text);
  if (!r) fail("tokenizer " + source_ + " has no " + text + " token; is it a Llama 3 tokenizer?");
  return static_cast<int64_t>(*r);
}

int64_t Tokenizer::single_id(const std::string& text) const {
  auto ids = encode(text);
  if (ids.size() != 1) {
    std::string shown = text == "\n" ? "'\\n'" : text == "\n\n" ? "'\\n\\n'" : "'" + text + "'";
    fail("tokenizer " + source_ + " splits " + shown + " into " + std::to_string(ids.size()) +
         " tokens; is it a Llama 3 tokenizer?");
  }
  return ids[0];
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  uint64_t prev = 0;
  for (int64_t id : ids) {
    auto r = impl_->base().decode(prev, static_cast<uint64_t>(id));
    if (!r.ok()) fail("the tokenizer cannot decode token " + std::to_string(id));
    out += *r;
    prev = static_cast<uint64_t>(id);
  }
  return out;
}

}  // namespace guard
