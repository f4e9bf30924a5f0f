// Tokenization on the device with ExecuTorch's tokenizers library (pytorch/tokenizers, what its LLM runner uses):
// a Hugging Face tokenizer.json (HFTokenizer) or a Llama 3 tiktoken tokenizer.model (Tiktoken).
//
// Conversation text is plain text, as guard/format/tokenizer.py encodes it (HF `encode_special_tokens=True`):
// a special token spelled in the text ("<|eot_id|>") is ordinary characters; only non-special added tokens
// (guard-mini's "unsafe") are matched as tokens, leftmost-longest, like Hugging Face's added vocabulary.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace guard {

class Format;

class Tokenizer {
 public:
  // path: a tokenizer.json or tokenizer.model file; format supplies the Llama 3 special-token names (tiktoken).
  Tokenizer(const std::string& path, const Format& format);
  ~Tokenizer();
  std::vector<int64_t> encode(const std::string& text) const;  // plain text: never a special token
  int64_t special_id(const std::string& text) const;           // an added/special token by its text
  int64_t single_id(const std::string& text) const;            // text that must encode to exactly one token
  std::string decode(const std::vector<int64_t>& ids) const;
  const std::string& source() const { return source_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string source_;
};

}  // namespace guard
