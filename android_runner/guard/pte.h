// A guard .pte on ExecuTorch's core runtime: metadata checks as guard/runtime/pte.py's PteRunner, and its
// `prefill`/`decode` calls (padded chunks, one shared KV-cache arena).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace guard {

struct MetaValue {
  bool is_string = false;
  int64_t i = 0;
  double d = 0;
  std::string s;
};

class Pte {
 public:
  explicit Pte(const std::string& path);  // throws Failure naming the problem
  ~Pte();
  std::vector<float> prefill(const std::vector<int64_t>& tokens, int64_t start_pos);  // logits of the last token
  std::vector<float> decode(int64_t token, int64_t pos);
  int64_t num(const std::string& key) const;
  std::string str(const std::string& key) const;
  bool has(const std::string& key) const { return meta_.count(key) > 0; }
  const std::map<std::string, std::vector<MetaValue>>& meta() const { return meta_; }
  const std::vector<int64_t>& output_ids() const { return output_ids_; }  // empty: full vocabulary
  int64_t max_seq_len() const { return max_seq_len_; }
  static int set_threads(int n);  // XNNPACK's threadpool: n, else GUARD_THREADS, else every available core

 private:
  std::vector<float> call(const char* name, std::vector<int64_t>& x, std::vector<int64_t>& p, std::vector<int64_t>& last);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::map<std::string, std::vector<MetaValue>> meta_;
  std::vector<int64_t> output_ids_;
  int64_t chunk_ = 0, max_seq_len_ = 0;
  std::string path_;
};

}  // namespace guard
