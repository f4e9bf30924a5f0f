// guard_runner: the `guard bench` runner contract (guard/bench/runner_main.py) in C++ on the ExecuTorch runtime.
//
//   guard_runner --model model.pte --threads N --runs R --warmup W --prompt-tokens 16,40 --out stats.json
//
// It makes the calls guard.bench.host makes through PteRunner/Guard: per run it loads the .pte (guard::Pte: metadata
// from the constant methods, then `prefill`, the chunk methods and `decode` sharing their KV-cache arena and one
// packed copy of the weights), and per message length it times
//   1. a verdict on an empty cache (TTFT = prefill of guard prompt + "\n\n"), then 16 greedy decode steps;
//   2. a verdict for another message with the policy head cached (prefix reuse, like Guard._feed).
// The token ids come from guard_prompts.txt beside the model (guard/bench/prompts.py writes it; `guard bench
// --device` pushes it), so no tokenizer runs on the device. Output: the guard-bench-1 stats document, each record
// with the field names of ExecuTorch's LLM runner Stats (extension/llm/runner/stats.h).
//
// Built on the .pte layer shared with etlite and the native core (guard/runtime/pte_program.h: the core runtime API,
// not extension/module's Module): its headers ship in the executorch pip wheel, so the same source compiles and runs
// on a host against the wheel (CMake option GUARD_RUNNER_FROM_WHEEL) and on Android against an NDK build.

#include "guard_runner.h"

#ifdef GUARD_RUNNER_LLM_STATS
#include <executorch/extension/llm/runner/stats.h>
#endif

#ifdef GUARD_RUNNER_WITH_CORE
#include <nlohmann/json.hpp>

#include "guard/format.h"
#include "guard/tokenizer.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

namespace guard {

// ---- loading: guard::Pte (guard/pte.cpp, on the .pte layer shared with etlite), as PteRunner loads the file ----

static std::unique_ptr<Pte> load_model(const std::string& path) {
  auto m = std::make_unique<Pte>(path);
  if (m->str("get_prompt_format") != kPromptFormat)
    fail(path + " expects prompt format '" + m->str("get_prompt_format") + "', not '" + kPromptFormat + "'");
  return m;
}

// ---- Guard.classify over token ids: prefix caching, first-token verdict, category decoding when unsafe ----

class Guard {
 public:
  explicit Guard(Pte& r) : r_(r) {
    safe_ = column(r.num("get_safe_id"));
    unsafe_ = column(r.num("get_unsafe_id"));
    if (safe_ < 0 || unsafe_ < 0 || column(r.num("get_eot_id")) < 0)
      fail("the model's output vocabulary lacks a verdict token");
  }
  void invalidate() { cached_.clear(); }

  // ids = guard prompt + "\n\n". Returns the verdict; prefill_ms and prefilled tokens of the prompt part.
  Verdict classify(const std::vector<int64_t>& ids) {
    Verdict v;
    double t0 = now_ms();
    if (ids.size() + 3 + kMaxCategoryTokens > static_cast<size_t>(r_.max_seq_len()))
      fail("conversation needs " + std::to_string(ids.size() + 3 + kMaxCategoryTokens) +
           " tokens with the verdict, more than the model's maximum of " + std::to_string(r_.max_seq_len()));
    size_t keep = 0;
    while (keep < cached_.size() && keep + 1 < ids.size() && cached_[keep] == ids[keep]) ++keep;
    cached_.clear();
    std::vector<float> logits = r_.prefill(std::vector<int64_t>(ids.begin() + keep, ids.end()), keep);
    cached_ = ids;
    v.prefill_ms = now_ms() - t0;
    v.prefilled_tokens = ids.size() - keep;
    v.p_unsafe = p_unsafe(logits[safe_], logits[unsafe_]);
    int64_t top = argmax(logits), pos = ids.size();
    if (top != safe_ && top != unsafe_) {
      v.decision = "indeterminate";
    } else if (v.p_unsafe < 0.5) {
      v.decision = "safe";
    } else {  // "unsafe", "\n", "S" forced as one chunk, then greedy until end of turn. Without a tokenizer the
              // category text is not parsed: "unsafe" here means an end of turn came within 24 tokens.
      std::vector<int64_t> forced{r_.num("get_unsafe_id"), r_.num("get_newline_id"), r_.num("get_s_id")};
      logits = r_.prefill(forced, pos);
      cached_.insert(cached_.end(), forced.begin(), forced.end());
      pos += forced.size();
      v.decision = "indeterminate";
      for (int i = 0; i < kMaxCategoryTokens; ++i) {
        int64_t next = token_of(argmax(logits));
        if (next == r_.num("get_eot_id")) {
          v.decision = "unsafe";
          break;
        }
        logits = r_.decode(next, pos++);
        cached_.push_back(next);
        v.category_tokens++;
      }
    }
    v.latency_ms = now_ms() - t0;
    return v;
  }

  int64_t token_of(int64_t col) const { return r_.output_ids().empty() ? col : r_.output_ids().at(col); }

 private:
  int64_t column(int64_t token) const {
    const auto& ids = r_.output_ids();
    if (ids.empty()) return token;
    auto it = std::find(ids.begin(), ids.end(), token);
    return it == ids.end() ? -1 : it - ids.begin();
  }
  Pte& r_;
  int64_t safe_, unsafe_;
  std::vector<int64_t> cached_;
};

// ---- the benchmark: guard.bench.host._one / run_bench ----

// ExecuTorch's LLM runner prints this line (extension/llm/runner/stats.h, stats_to_json_string); tools parse it.
static void print_observer(double load_ms, double ttft, double decode_ms, int64_t n_prompt, int64_t n_generated) {
  printf("PyTorchObserver {\"prompt_tokens\":%lld,\"generated_tokens\":%lld,\"model_load_start_ms\":0,"
         "\"model_load_end_ms\":%ld,\"inference_start_ms\":%ld,\"inference_end_ms\":%ld,\"prompt_eval_end_ms\":%ld,"
         "\"first_token_ms\":%ld,\"aggregate_sampling_time_ms\":0,\"SCALING_FACTOR_UNITS_PER_SECOND\":1000}\n",
         static_cast<long long>(n_prompt), static_cast<long long>(n_generated), std::lround(load_ms), std::lround(load_ms),
         std::lround(load_ms + ttft + decode_ms), std::lround(load_ms + ttft), std::lround(load_ms + ttft));
  fflush(stdout);
}

static Json one(Pte& runner, const Prompts& prompts, int n, double load_ms, int decode_tokens) {
  Guard guard(runner);
  const auto& first_ids = prompts.first.at(n);
  Verdict first = guard.classify(first_ids);
  double ttft = first.prefill_ms;
  int64_t n_prompt = first_ids.size(), pos = n_prompt, token = runner.num("get_safe_id");
  double d0 = now_ms();
  for (int i = 0; i < decode_tokens; ++i) {
    std::vector<float> logits = runner.decode(token, pos++);
    token = guard.token_of(argmax(logits));
  }
  double decode_ms = now_ms() - d0;
  guard.invalidate();
  guard.classify(prompts.warm);  // the loaded guard has its policy head cached
  Verdict v = guard.classify(prompts.second.at(n));
  Json r = et_stats(0.0, load_ms, load_ms, load_ms + ttft, load_ms + ttft, load_ms + ttft + decode_ms, n_prompt, decode_tokens);
  r.add("message_tokens", n).add("model_load_ms", round_to(load_ms, 1)).add("ttft_ms", round_to(ttft, 2));
  r.add("prefill_tok_s", round_to(n_prompt / ttft * 1e3, 1)).add("decode_tok_s", round_to(decode_tokens / decode_ms * 1e3, 2));
  r.add("verdict_ms", round_to(v.latency_ms, 2)).add("verdict_prefilled_tokens", static_cast<int64_t>(v.prefilled_tokens));
  r.add("peak_rss_mb", round_to(peak_rss_mb(), 1));
  if (const char* path = getenv("GUARD_RUNNER_VERDICTS")) {  // for correctness checks against the Python runtime
    std::ofstream f(path, std::ios::app);
    for (auto [name, verdict] : {std::pair{"first", &first}, std::pair{"second", &v}}) {
      Json line;
      line.add("message_tokens", n).add("prompt", name).add("decision", verdict->decision).add("p_unsafe", verdict->p_unsafe);
      f << line.str() << "\n";
    }
  }
#ifndef GUARD_RUNNER_LLM_STATS
  print_observer(load_ms, ttft, decode_ms, n_prompt, decode_tokens);
#else
  executorch::extension::llm::Stats stats;  // integer ms, printed the way ExecuTorch's LLM runners print them
  stats.reset();
  stats.model_load_end_ms = std::lround(load_ms);
  stats.inference_start_ms = stats.model_load_end_ms;
  stats.prompt_eval_end_ms = stats.first_token_ms = std::lround(load_ms + ttft);
  stats.inference_end_ms = std::lround(load_ms + ttft + decode_ms);
  stats.num_prompt_tokens = n_prompt;
  stats.num_generated_tokens = decode_tokens;
  printf("PyTorchObserver %s\n", executorch::extension::llm::stats_to_json_string(stats).c_str());
#endif
  return r;
}

#ifdef GUARD_RUNNER_WITH_CORE
// Tokenize and render the bench messages on the device, as an app would (android_runner/guard/): tokenizer.json and
// guard_format.json beside the model. The ids must be the host's, token for token; the run stops if not.
static void tokenize_on_device(const std::string& dir, Prompts& p) {
  std::ifstream probe(dir + "/guard_format.json");
  if (!probe || p.warm_text.empty()) return;
  Format fmt(dir + "/guard_format.json");
  Tokenizer tok(dir + "/tokenizer.json", fmt);
  auto shown = fmt.policy({});
  auto head = fmt.head_ids(tok, shown, "User");
  int64_t blank = tok.single_id("\n\n");
  auto ids_of = [&](const std::string& json_text, const std::vector<int64_t>& host, const std::string& what) {
    std::string text = nlohmann::json::parse(json_text).get<std::string>();
    std::vector<Message> msgs{{"user", text}};
    fmt.check_conversation(msgs);
    std::vector<int64_t> ids(head);
    auto body = fmt.body_ids(tok, msgs);
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(blank);
    if (ids != host) fail("the device tokenizes the " + what + " prompt differently from the host (" + std::to_string(ids.size()) +
                          " vs " + std::to_string(host.size()) + " tokens)");
    return ids;
  };
  p.warm = ids_of(p.warm_text, p.warm, "warm");
  for (auto& [n, t] : p.first_text)
    if (p.first.count(n)) p.first[n] = ids_of(t, p.first[n], "first " + std::to_string(n));
  for (auto& [n, t] : p.second_text)
    if (p.second.count(n)) p.second[n] = ids_of(t, p.second[n], "second " + std::to_string(n));
  p.source = "tokenized and rendered on the device (tokenizer.json, guard_format.json); equal to the host's ids";
}
#endif

int run(const Args& a) {
  Prompts prompts = read_prompts(dir_of(a.model) + "/" + kPromptsFile, a.prompt_tokens);
#ifdef GUARD_RUNNER_WITH_CORE
  tokenize_on_device(dir_of(a.model), prompts);
#endif
  // Like guard.runtime.pte.set_threads: --threads, else GUARD_THREADS, else every available core.
  int threads = Pte::set_threads(a.threads);
  std::vector<Json> records;
  std::string backend;
  Json meta;
  for (int r = 0; r < a.warmup + a.runs; ++r) {
    double t0 = now_ms();
    auto model = load_model(a.model);
    double load_ms = now_ms() - t0;
    backend = "pte:" + model->str("get_quant_scheme");
    meta = meta_json(*model);
    for (int n : a.prompt_tokens) {
      Json rec = one(*model, prompts, n, load_ms, kDecodeTokens);
      rec.add("run", r).add("warmup", r < a.warmup);
      records.push_back(rec);
      fprintf(stderr, "run %d, %d message tokens: %s\n", r, n, rec.str().c_str());
    }
  }
  Json doc;
  doc.add("schema", kSchema).add("model", a.model).add("backend", backend).add("metadata", meta);
  doc.add("machine", machine(threads)).add("versions", versions());
  doc.add("command", a.command).add("config", config(a, kDecodeTokens)).add("prompts", prompts.source);
  doc.add("summary", summary(records, a.prompt_tokens));
  doc.add("runs", Json::array(records));
  std::ofstream f(a.out);
  f << doc.str(1) << "\n";
  if (!f) fail("cannot write " + a.out);
  return 0;
}

}  // namespace guard

int main(int argc, char** argv) {
  guard::Args a;
  if (int rc = guard::parse_args(argc, argv, a); rc >= 0) return rc;
  try {
    return guard::run(a);
  } catch (const guard::Failure& e) {
    fprintf(stderr, "guard_runner: error: %s\n", e.what());
    return 2;
  }
}
