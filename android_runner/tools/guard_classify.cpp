// guard_classify: the on-device classifier from the command line, with `guard classify`'s flags and JSON fields.
//
//   guard_classify --pte MODEL.pte [--response TEXT] [--json] [--categories S1,S10|FILE.json] [--exclude S6]
//                  [--renumber] [--threshold 0.5] [--indeterminate block|pass] [--uncalibrated] [--trust-tokenizer]
//                  [--long-policy windows|last_turns|error] [--segment-checks N] TEXT
// Exit codes as guard classify: 0 safe (or passed), 10 unsafe, 11 indeterminate and blocked, 2 bad input.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../guard/classifier.h"

using namespace guard;

static const char* kUsage =
    "usage: guard_classify --pte MODEL.pte [--response TEXT] [--json] [--categories SPEC] [--exclude CODES]\n"
    "                      [--renumber] [--threshold P] [--indeterminate block|pass] [--uncalibrated] [--trust-tokenizer]\n"
    "                      [--long-policy windows|last_turns|error] [--segment-checks N] TEXT\n";

static std::vector<std::string> commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');) {
    while (!part.empty() && isspace(static_cast<unsigned char>(part.back()))) part.pop_back();
    while (!part.empty() && isspace(static_cast<unsigned char>(part.front()))) part.erase(0, 1);
    for (auto& ch : part) ch = static_cast<char>(toupper(static_cast<unsigned char>(ch)));
    if (!part.empty()) out.push_back(part);
  }
  if (out.empty()) fail("no category codes in '" + s + "'");
  return out;
}

static int run(int argc, char** argv) {
  std::string pte, text, response, categories, exclude;
  bool json = false, has_text = false, has_response = false;
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("argument " + a + ": expected one argument");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") return printf("%s", kUsage), 0;
    if (a == "--pte") pte = value();
    else if (a == "--response") response = value(), has_response = true;
    else if (a == "--json") json = true;
    else if (a == "--categories") categories = value();
    else if (a == "--exclude") exclude = value();
    else if (a == "--renumber") o.policy.renumber = true;
    else if (a == "--threshold") o.threshold = std::stod(value());
    else if (a == "--indeterminate") o.block_indeterminate = value() != "pass";
    else if (a == "--uncalibrated") o.calibrated = false;
    else if (a == "--trust-tokenizer") o.trust_tokenizer = true;
    else if (a == "--long-policy") o.long_policy = value();
    else if (a == "--segment-checks") {
      std::string v = value();
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 6)
        fail("argument --segment-checks: expected a whole number >= 0, got '" + v + "'");
      o.segment_checks = std::stoi(v);
    }
    else if (a == "--tokenizer") o.tokenizer = value();
    else if (a.rfind("--", 0) == 0) fail("unrecognized arguments: " + a);
    else if (has_text) fail("unrecognized arguments: " + a);
    else text = a, has_text = true;
  }
  if (pte.empty()) fail("the following arguments are required: --pte");
  if (!has_text) {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (!categories.empty()) {
    std::ifstream f(categories);
    if (categories.size() > 5 && categories.compare(categories.size() - 5, 5, ".json") == 0) {
      if (!f) fail("category file not found: " + categories);
      auto j = nlohmann::ordered_json::parse(f, nullptr, false);
      if (!j.is_object() || j.empty()) fail("category file " + categories + " must hold a non-empty JSON object {code: description}");
      for (auto& [code, v] : j.items()) o.policy.categories.push_back({code, "", v.is_string() ? v.get<std::string>() : ""});
    } else {
      for (auto& c : commas(categories)) o.policy.categories.push_back({c, "", ""});
    }
  }
  if (!exclude.empty()) o.policy.excluded = commas(exclude);
  Classifier g(pte, o);
  if (g.format().strip(text).empty()) fail("empty text: nothing to classify");
  if (has_response && g.format().strip(response).empty()) fail("empty --response: nothing to classify");
  Verdict v = has_response ? g.classify(text, response) : g.classify(text);
  if (json) {
    printf("%s\n", v.json().c_str());
  } else {
    std::string cats;
    for (auto& h : v.categories) cats += (cats.empty() ? "" : ", ") + h.code + " " + h.name;
    std::string upper = v.decision;
    for (auto& ch : upper) ch = static_cast<char>(toupper(static_cast<unsigned char>(ch)));
    printf("%s%s  p_unsafe=%.4f  role=%s  %.0f ms", upper.c_str(), cats.empty() ? "" : ("  [" + cats + "]").c_str(),
           v.p_unsafe, v.role.c_str(), v.latency_ms);
    if (!v.reason.empty()) printf("  (%s; %s)", v.reason.c_str(), v.blocked ? "blocked" : "passed");
    printf("\n");
  }
  if (v.decision == "indeterminate") return v.blocked ? 11 : 0;
  return v.decision == "unsafe" ? 10 : 0;
}

// The runtime's and the tokenizer library's logging (cpuinfo probes, load messages) go to fd 2: keep the command's
// stderr to its one error line, as guard/runtime/pte.py's quiet_stderr does (GUARD_DEBUG=1 shows them). Silenced from
// a constructor that runs before the libraries' static initializers (pytorch/tokenizers' regex_lookahead logs one
// line from its own, at Info level, which its build does not compile out).
static int saved_stderr = -1;

__attribute__((constructor(101))) static void quiet_stderr() {
  if (getenv("GUARD_DEBUG")) return;
  saved_stderr = dup(2);
  int null = open("/dev/null", O_WRONLY);
  if (null >= 0) dup2(null, 2), close(null);
}

static void restore_stderr() {
  if (saved_stderr >= 0) dup2(saved_stderr, 2), close(saved_stderr), saved_stderr = -1;
}

int main(int argc, char** argv) {
  try {
    int rc = run(argc, argv);
    restore_stderr();
    return rc;
  } catch (const std::exception& e) {
    restore_stderr();
    fprintf(stderr, "guard_classify: error: %s\n", e.what());
    return 2;
  }
}
