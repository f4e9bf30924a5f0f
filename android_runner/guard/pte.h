// A guard .pte on the shared .pte layer (guard/runtime/pte_program.h): the metadata checks of
// guard/runtime/pte.py's PteRunner, and prefill split over the file's static chunk methods (get_prefill_chunks:
// prefill, prefill_<n>, decode) as guard.runtime.pte.plan splits it, on one shared KV-cache arena.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../guard/runtime/pte_common.h"

namespace guard {

// guard/export/metadata.py: the constant methods every guard .pte has (REQUIRED, in its order), and the optional
// list of static prefill sizes (CHUNKS).
inline constexpr const char* kPteRequired[] = {
    "get_guard_format", "get_max_seq_len", "get_prefill_chunk", "get_vocab_size", "get_output_ids",
    "get_prompt_format", "get_quant_scheme", "get_group_size", "get_bos_id", "get_eot_id", "get_safe_id",
    "get_unsafe_id", "get_newline_id", "get_blank_id", "get_s_id"};
inline constexpr const char* kPteChunks = "get_prefill_chunks";
// guard.export.metadata.SPAN: steps take keys[1, S] (positions 0..S-1, S the step's end rounded up to this) as well
inline constexpr const char* kPteSpan = "get_attention_span";

class PteProgram;

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
  const std::vector<int64_t>& chunks() const { return chunks_; }          // static call sizes, largest first, then 1
  int64_t max_seq_len() const { return max_seq_len_; }
  // XNNPACK's threadpool: n > 0 threads; else GUARD_THREADS, else every available core. A Pte opened before any call
  // sets the default.
  static int set_threads(int n);

 private:
  std::vector<float> run(int64_t size, const int64_t* tokens, size_t n, int64_t pos);
  std::unique_ptr<PteProgram> program_;
  std::map<std::string, std::vector<MetaValue>> meta_;
  std::vector<int64_t> output_ids_, chunks_;
  std::map<int64_t, std::string> chunk_names_;
  int64_t chunk_ = 0, max_seq_len_ = 0, span_ = 0;
  std::vector<float> keys_;  // 0, 1, ..., max_seq_len - 1: the key positions a step passes a prefix of
};

// guard.runtime.pte.plan: call sizes for prefilling n tokens with the static sizes `sizes` (largest first).
std::vector<int64_t> plan(int64_t n, const std::vector<int64_t>& sizes);

}  // namespace guard
