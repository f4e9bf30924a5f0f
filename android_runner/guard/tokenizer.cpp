// guard::Tokenizer over pytorch/tokenizers (see tokenizer.h).
#include "tokenizer.h"

#include <pytorch/tokenizers/hf_tokenizer.h>
#include <pytorch/tokenizers/tiktoken.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
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

// A tokenizer.json of the Llama 3 kind (Split on the tiktoken regex, then ByteLevel with use_regex=false, as
// transformers' TikTokenConverter writes it) as a tiktoken file: pytorch/tokenizers' HFTokenizer re-splits every
// piece with the GPT-2 regex in its ByteLevel step (it ignores use_regex), which breaks ".\n\n" into "." "\n\n"
// where Hugging Face keeps one token. Its Tiktoken applies the regex once, as Hugging Face does.
bool llama3_style(const nlohmann::json& j, std::string& pattern) {
  const auto& p = j.value("pre_tokenizer", nlohmann::json());
  if (!p.is_object() || p.value("type", "") != "Sequence" || p.value("pretokenizers", nlohmann::json()).size() != 2) return false;
  const auto& a = p["pretokenizers"][0];
  const auto& b = p["pretokenizers"][1];
  if (a.value("type", "") != "Split" || !a.value("pattern", nlohmann::json()).contains("Regex") || a.value("invert", false) ||
      a.value("behavior", "") != "Isolated" || b.value("type", "") != "ByteLevel" || b.value("use_regex", true) ||
      b.value("add_prefix_space", false))
    return false;
  pattern = a["pattern"]["Regex"].get<std::string>();
  return true;
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += t[v >> 18], out += t[(v >> 12) & 63], out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += '=';
  }
  return out;
}

// -> the tiktoken file's text and the special tokens (ids right after the vocabulary); false if not convertible.
bool to_tiktoken(const nlohmann::json& j, std::string& text, std::vector<std::string>& specials) {
  std::map<char32_t, uint8_t> byte_of;  // GPT-2's bytes_to_unicode, inverted
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    byte_of[printable ? char32_t(b) : char32_t(256 + extra++)] = uint8_t(b);
  }
  std::vector<std::pair<uint64_t, std::string>> vocab;
  for (const auto& [tok, id] : j.at("model").at("vocab").items()) {
    std::vector<char32_t> cps;
    if (!utf8_decode(tok, cps)) return false;
    std::string bytes;
    for (char32_t c : cps) {
      auto it = byte_of.find(c);
      if (it == byte_of.end()) return false;
      bytes += char(it->second);
    }
    vocab.emplace_back(id.get<uint64_t>(), bytes);
  }
  std::sort(vocab.begin(), vocab.end());
  for (size_t i = 0; i < vocab.size(); ++i)
    if (vocab[i].first != i) return false;
  std::vector<std::pair<uint64_t, std::string>> added;
  for (const auto& t : j.at("added_tokens")) added.emplace_back(t.at("id").get<uint64_t>(), t.at("content").get<std::string>());
  std::sort(added.begin(), added.end());
  for (size_t i = 0; i < added.size(); ++i)
    if (added[i].first != vocab.size() + i) return false;
  for (auto& a : added) specials.push_back(a.second);
  for (auto& [id, bytes] : vocab) text += base64(bytes) + " " + std::to_string(id) + "\n";
  return !specials.empty();
}

// A file the library can open by path, without touching the file system (memfd), else a temporary file.
std::string scratch_file(const std::string& text, int& fd) {
#ifdef SYS_memfd_create
  fd = static_cast<int>(syscall(SYS_memfd_create, "guard-tokenizer", 0));
#else
  fd = -1;
#endif
  std::string path;
  if (fd >= 0) {
    path = "/proc/self/fd/" + std::to_string(fd);
  } else {
    const char* dir = getenv("TMPDIR");
    path = std::string(dir ? dir : "/tmp") + "/guard-tokenizer-XXXXXX";
    fd = mkstemp(&path[0]);
    if (fd < 0) fail("cannot create a temporary file for the tokenizer");
    unlink(path.c_str());
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  for (size_t off = 0; off < text.size();) {
    ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n <= 0) fail("cannot write the converted tokenizer");
    off += static_cast<size_t>(n);
  }
  return path;
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
  std::string pattern, text;
  std::vector<std::string> specials;
  if (llama3_style(j, pattern) && to_tiktoken(j, text, specials)) {
    int fd = -1;
    std::string file = scratch_file(text, fd);
    impl_->tt = std::make_unique<Plain<tk::Tiktoken>>(pattern, specials, 0, 1);
    auto err = impl_->tt->load(file);
    close(fd);
    if (err != tk::Error::Ok) fail("cannot read " + path + " as a Llama 3 tokenizer");
    return;
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
  return utf8_lossy(out);  // a cut inside a character is U+FFFD, as Hugging Face's decode gives it
}

}  // namespace guard
