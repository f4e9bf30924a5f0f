// guard_runner's plumbing: argparse-compatible flags, guard_prompts.txt, JSON, the stats schema's summaries.
#include "guard_runner.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>
#ifdef __ANDROID__
#include <sys/system_properties.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#ifndef GUARD_ET_VERSION
#define GUARD_ET_VERSION "unknown"
#endif

namespace guard {

// ---- arguments: the flags of guard/bench/runner_main.py, with argparse's spelling rules and exit codes ----

static const char* kUsage =
    "usage: guard_runner [-h] --model MODEL [--threads THREADS] [--runs RUNS] [--warmup WARMUP]\n"
    "                    [--prompt-tokens PROMPT_TOKENS] --out OUT\n";
static const char* kFlags[] = {"--model", "--threads", "--runs", "--warmup", "--prompt-tokens", "--out"};

static int usage_error(const std::string& msg) {
  fprintf(stderr, "%sguard_runner: error: %s\n", kUsage, msg.c_str());
  return 2;
}

static bool to_int(const std::string& s, int& out) {
  char* end = nullptr;
  long v = strtol(s.c_str(), &end, 10);
  if (s.empty() || *end) return false;
  out = static_cast<int>(v);
  return true;
}

int parse_args(int argc, char** argv, Args& a) {
  std::map<std::string, std::string> got;
  for (int i = 0; i < argc; ++i) a.command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "-h" || arg == "--help") {
      printf("%s\nThe guard bench runner (android_runner/): writes the guard-bench-1 stats JSON.\n", kUsage);
      return 0;
    }
    bool inline_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1), arg = arg.substr(0, eq), inline_value = true;
    }
    std::vector<std::string> match;  // argparse accepts unambiguous prefixes
    for (const char* f : kFlags)
      if (arg.size() > 2 && std::string(f).rfind(arg, 0) == 0) match.push_back(f);
    if (std::find(std::begin(kFlags), std::end(kFlags), arg) != std::end(kFlags)) match = {arg};
    if (match.size() != 1 || arg.rfind("--", 0) != 0)
      return usage_error(match.size() > 1 ? "ambiguous option: " + arg : "unrecognized arguments: " + arg);
    if (!inline_value) {
      if (i + 1 >= argc || (argv[i + 1][0] == '-' && argv[i + 1][1] == '-'))
        return usage_error("argument " + match[0] + ": expected one argument");
      value = argv[++i];
    }
    got[match[0]] = value;
  }
  std::vector<std::string> missing;
  for (const char* f : {"--model", "--out"})
    if (!got.count(f)) missing.push_back(f);
  if (!missing.empty())
    return usage_error("the following arguments are required: " + missing[0] + (missing.size() > 1 ? ", " + missing[1] : ""));
  a.model = got["--model"], a.out = got["--out"];
  using Flag = std::pair<const char*, int*>;
  for (auto [flag, dst] : std::initializer_list<Flag>{{"--threads", &a.threads}, {"--runs", &a.runs}, {"--warmup", &a.warmup}})
    if (got.count(flag) && !to_int(got[flag], *dst))
      return usage_error(std::string("argument ") + flag + ": invalid int value: '" + got[flag] + "'");
  if (got.count("--prompt-tokens")) {
    a.prompt_tokens.clear();
    std::stringstream ss(got["--prompt-tokens"]);
    for (std::string part; std::getline(ss, part, ',');) {
      int n;
      if (!to_int(part, n)) return usage_error("--prompt-tokens must be comma-separated integers, not '" + got["--prompt-tokens"] + "'");
      a.prompt_tokens.push_back(n);
    }
  }
  if (a.runs < 1) return usage_error("--runs must be at least 1");
  return -1;
}

// ---- guard_prompts.txt (guard/bench/prompts.py) ----

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash ? slash : 1);
}

Prompts read_prompts(const std::string& path, const std::vector<int>& lengths) {
  std::string fix = "write it with `python -m guard.bench.prompts --tokenizer DIR --prompt-tokens ...` "
                    "(guard bench --device writes and pushes it)";
  std::ifstream f(path);
  if (!f) fail(path + " not found: the runner reads the prompt token ids from it; " + fix);
  Prompts p;
  bool format_ok = false;
  for (std::string line; std::getline(f, line);) {
    std::istringstream ss(line);
    std::string key;
    ss >> key;
    if (key == "format") {
      std::string v;
      ss >> v;
      if (v != kPromptsFormat) fail(path + " has format '" + v + "', not " + kPromptsFormat + "; re" + fix);
      format_ok = true;
      continue;
    }
    if (key == "text") {  // text KIND [N] JSON-STRING: kept raw, decoded by the core build (device tokenization)
      std::string kind, rest;
      int n = 0;
      ss >> kind;
      if (kind == "first" || kind == "second") ss >> n;
      std::getline(ss, rest);
      rest.erase(0, rest.find_first_not_of(' '));
      if (kind == "warm") p.warm_text = rest;
      else if (kind == "first") p.first_text[n] = rest;
      else if (kind == "second") p.second_text[n] = rest;
      continue;
    }
    int n = 0;
    if (key == "first" || key == "second") ss >> n;
    std::vector<int64_t> ids;
    for (int64_t id; ss >> id;) ids.push_back(id);
    if (key == "warm") p.warm = ids;
    else if (key == "first") p.first[n] = ids;
    else if (key == "second") p.second[n] = ids;
  }
  if (!format_ok || p.warm.empty()) fail(path + " is not a guard prompts file; " + fix);
  for (int n : lengths)
    if (!p.first.count(n) || !p.second.count(n) || p.first[n].empty() || p.second[n].empty())
      fail(path + " has no prompt of " + std::to_string(n) + " message tokens; re" + fix);
  return p;
}

// ---- numbers ----

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

double peak_rss_mb() {
  struct rusage r {};
  getrusage(RUSAGE_SELF, &r);
  return r.ru_maxrss / 1024.0;  // KiB on Linux and Android
}

double round_to(double x, int digits) {
  double s = std::pow(10.0, digits);
  return std::nearbyint(x * s) / s;  // half to even, like Python's round
}

double p_unsafe(float logit_safe, float logit_unsafe) {  // guard/verdict.py: two-way softmax
  double d = static_cast<double>(logit_safe) - logit_unsafe;
  return d > -700 ? 1.0 / (1.0 + std::exp(d)) : 1.0;
}

int64_t argmax(const std::vector<float>& v) {
  return std::max_element(v.begin(), v.end()) - v.begin();  // first maximum, like torch.argmax on CPU
}

// ---- the stats schema (guard/bench/schema.py) ----

Json et_stats(double load0, double load1, double start, double prompt_end, double first_token, double end,
              int64_t n_prompt, int64_t n_generated, double sampling_ms) {
  Json r;
  r.add("SCALING_FACTOR_UNITS_PER_SECOND", 1000).add("model_load_start_ms", load0).add("model_load_end_ms", load1);
  r.add("inference_start_ms", start).add("prompt_eval_end_ms", prompt_end).add("first_token_ms", first_token);
  r.add("inference_end_ms", end).add("aggregate_sampling_time_ms", sampling_ms);
  r.add("num_prompt_tokens", n_prompt).add("num_generated_tokens", n_generated);
  return r;
}

static Json summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  double median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  auto q = [&](double p) {
    long i = static_cast<long>(std::nearbyint(p * (n - 1)));
    return v[std::min<long>(n - 1, std::max<long>(0, i))];
  };
  Json s;
  s.add("median", round_to(median, 3)).add("p10", round_to(q(0.1), 3)).add("p90", round_to(q(0.9), 3));
  s.add("n", static_cast<int64_t>(n));
  return s;
}

Json summary(const std::vector<Json>& records, const std::vector<int>& lengths) {
  static const char* metrics[] = {"model_load_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s", "verdict_ms", "peak_rss_mb"};
  Json out;
  for (int n : lengths) {
    std::vector<const Json*> rows;
    for (const Json& r : records)
      if (r.at("message_tokens").as_int() == n && r.at("warmup").str() == "false") rows.push_back(&r);
    Json s;
    for (const char* m : metrics) {
      std::vector<double> v;
      for (const Json* r : rows) v.push_back(r->at(m).as_double());
      s.add(m, summarize(v));
    }
    s.add("num_prompt_tokens", rows.at(0)->at("num_prompt_tokens").as_int());
    out.add(std::to_string(n), s);
  }
  return out;
}

static std::string read_first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

static std::string cpu_name() {
#ifdef __ANDROID__
  char soc[PROP_VALUE_MAX] = {0};
  if (__system_property_get("ro.soc.model", soc) > 0) return soc;
#endif
  std::ifstream f("/proc/cpuinfo");
  std::string hardware = "?";
  for (std::string line; std::getline(f, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    std::string value = line.substr(line.find_first_not_of(" \t", colon + 1) == std::string::npos ? line.size() : line.find_first_not_of(" \t", colon + 1));
    if (key == "model name") return value;
    if (key == "Hardware") hardware = value;
  }
  return hardware;
}

Json machine(int threads) {
  struct utsname u {};
  uname(&u);
  cpu_set_t set;
  CPU_ZERO(&set);
  int available = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : -1;
  Json load = Json::array({});
  std::istringstream ss(read_first_line("/proc/loadavg"));
  for (int i = 0; i < 3; ++i) {
    double x;
    if (ss >> x) load.push(round_to(x, 2));
  }
  Json m;
  m.add("cpu", cpu_name()).add("cores", static_cast<int64_t>(sysconf(_SC_NPROCESSORS_CONF))).add("available_cores", available);
  m.add("threads", threads).add("os", std::string(u.sysname) + " " + u.release).add("arch", std::string(u.machine));
  m.add("load_avg", load);
#ifdef __ANDROID__
  char model[PROP_VALUE_MAX] = {0};
  if (__system_property_get("ro.product.model", model) > 0) m.add("device", std::string(model));
#endif
  return m;
}

Json versions() {
  Json v;
  v.add("executorch", GUARD_ET_VERSION).add("guard_runner", "c++ (android_runner)");
#ifdef __VERSION__
  v.add("compiler", __VERSION__);
#endif
  return v;
}

Json config(const Args& a, int decode_tokens) {
  Json lengths = Json::array({});
  for (int n : a.prompt_tokens) lengths.push(n);
  Json c;
  c.add("runs", a.runs).add("warmup", a.warmup).add("prompt_tokens", lengths).add("decode_tokens", decode_tokens).add("dtype", "fp32");
  return c;
}

// ---- metadata ----

static Json json_of(const MetaValue& v) {
  if (v.kind == MetaValue::Kind::String) return v.s;
  if (v.kind == MetaValue::Kind::Double) return v.d;
  return v.i;
}

Json meta_json(const Pte& pte) {  // as PteRunner.meta: the required keys, get_output_ids as a list
  Json out;
  auto list = [](const std::vector<MetaValue>& vals) {
    Json a = Json::array({});
    for (const auto& v : vals) a.push(json_of(v));
    return a;
  };
  for (const char* key : kPteRequired) {
    const auto& vals = pte.meta().at(key);
    out.add(key, std::string(key) == "get_output_ids" ? list(vals) : json_of(vals.at(0)));
  }
  if (pte.has(kPteChunks)) out.add(kPteChunks, list(pte.meta().at(kPteChunks)));
  if (pte.has(kPteSpan)) out.add(kPteSpan, json_of(pte.meta().at(kPteSpan).at(0)));
  return out;
}

// ---- JSON ----

Json Json::array(std::vector<Json> items) {
  Json j;
  j.kind_ = Kind::Array;
  j.items_ = std::move(items);
  return j;
}

Json& Json::add(const std::string& key, Json value) {
  kind_ = Kind::Object;
  members_.emplace_back(key, std::move(value));
  return *this;
}

Json& Json::push(Json value) {
  kind_ = Kind::Array;
  items_.push_back(std::move(value));
  return *this;
}

const Json& Json::at(const std::string& key) const {
  for (const auto& [k, v] : members_)
    if (k == key) return v;
  fail("internal: no field " + key);
}

static void escape(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  out += '"';
}

void Json::write(std::string& out, int indent, int depth) const {
  auto newline = [&](int d) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent * d), ' ');
  };
  char buf[32];
  switch (kind_) {
    case Kind::Null: out += "null"; break;
    case Kind::Bool: out += b_ ? "true" : "false"; break;
    case Kind::Int: out += std::to_string(i_); break;
    case Kind::Double:
      if (!std::isfinite(d_)) out += "null";
      else snprintf(buf, sizeof buf, "%.15g", d_), out += buf;
      break;
    case Kind::String: escape(out, s_); break;
    case Kind::Array:
      out += '[';
      for (size_t i = 0; i < items_.size(); ++i) {
        if (i) out += indent >= 0 ? "," : ", ";
        newline(depth + 1);
        items_[i].write(out, indent, depth + 1);
      }
      if (!items_.empty()) newline(depth);
      out += ']';
      break;
    case Kind::Object:
      out += '{';
      for (size_t i = 0; i < members_.size(); ++i) {
        if (i) out += indent >= 0 ? "," : ", ";
        newline(depth + 1);
        escape(out, members_[i].first);
        out += ": ";
        members_[i].second.write(out, indent, depth + 1);
      }
      if (!members_.empty()) newline(depth);
      out += '}';
      break;
  }
}

std::string Json::str(int indent) const {
  std::string out;
  write(out, indent, 0);
  return out;
}

}  // namespace guard
