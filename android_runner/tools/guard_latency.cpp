// guard_latency: timings of the native classifier for benchmarks/native_latency.py (same sequence as its Python half).
//   guard_latency --pte MODEL.pte --runs R  < texts   (stdin: JSON {"warm": text, "messages": [text, ...]})
// Per run: TTFT = a classification on an empty cache (the whole prompt prefilled, up to the verdict token), then
// the verdict latency of another message with the policy head cached. Prints one JSON object with all samples.
#include <sys/resource.h>

#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "../guard/classifier.h"

using namespace guard;

int main(int argc, char** argv) {
  std::string pte;
  int runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--pte") pte = argv[i + 1];
    else if (a == "--runs") runs = std::stoi(argv[i + 1]);
  }
  try {
    auto in = nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(std::cin), {}));
    double t0 = now_ms();
    Classifier g(pte);
    double load_ms = now_ms() - t0;
    std::vector<std::string> msgs = in.at("messages").get<std::vector<std::string>>();
    nlohmann::ordered_json out, ttft = nlohmann::json::array(), verdict = nlohmann::json::array(), tokens;
    for (int r = 0; r < runs; ++r) {
      g.invalidate();
      Verdict first = g.classify(msgs[r % msgs.size()]);
      ttft.push_back(first.prefill_ms);
      g.classify(in.at("warm").get<std::string>());  // the policy head (and the shared prompt prefix) is cached
      Verdict v = g.classify(msgs[(r + 1) % msgs.size()]);
      verdict.push_back(v.latency_ms);
      tokens = {{"prompt", first.prompt_tokens}, {"verdict_prefilled", v.prefilled_tokens}};
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    out["load_ms"] = load_ms;
    out["ttft_ms"] = ttft;
    out["verdict_ms"] = verdict;
    out["tokens"] = tokens;
    out["peak_rss_mb"] = ru.ru_maxrss / 1024.0;
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "guard_latency: error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
