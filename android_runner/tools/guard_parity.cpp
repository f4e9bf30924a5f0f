// guard_parity: for tests/native/ (C++ against Python). Reads JSONL requests on stdin, one answer per line:
//   guard_parity --tokens --tokenizer TOKENIZER --format guard_format.json   -> {"ids": [...]} | {"error": "..."}
//   guard_parity --pte MODEL.pte                                              -> the verdict JSON | {"error": "..."}
// Request: {"messages": [{"role": "user", "content": "..."}, ...], "options": {... as guard.h ...}}
// Built with -DGUARD_TOKENS_ONLY (build.sh aarch64: guard_tokens, static, no ExecuTorch) it has the --tokens mode only.
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "../guard/classifier.h"
#include "../guard/options.h"

using namespace guard;
using json = nlohmann::ordered_json;

int main(int argc, char** argv) {
  std::string pte, tokenizer, format;
  bool tokens = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tokens") tokens = true;
    else if (a == "--pte" && i + 1 < argc) pte = argv[++i];
    else if (a == "--tokenizer" && i + 1 < argc) tokenizer = argv[++i];
    else if (a == "--format" && i + 1 < argc) format = argv[++i];
    else return fprintf(stderr, "guard_parity: bad argument %s\n", a.c_str()), 2;
  }
  try {
    std::unique_ptr<Format> fmt;
    std::unique_ptr<Tokenizer> tok;
    if (tokens) fmt = std::make_unique<Format>(format), tok = std::make_unique<Tokenizer>(tokenizer, *fmt);
#ifndef GUARD_TOKENS_ONLY
    std::map<std::string, std::unique_ptr<Classifier>> guards;  // one per options
#else
    if (!tokens) fail("this build has the --tokens mode only");
#endif
    for (std::string line; std::getline(std::cin, line);) {
      json out;
      try {
        json req = json::parse(line);
        std::vector<Message> msgs;
        for (auto& m : req.at("messages")) msgs.push_back({m.at("role"), m.at("content")});
        std::string opts = req.contains("options") ? req["options"].dump() : "";
        if (tokens) {
          Options o = options_from_json(opts);
          msgs = Format::visible(msgs);
          fmt->check_conversation(msgs);
          auto shown = fmt->policy(o.policy);
          auto ids = fmt->head_ids(*tok, shown, fmt->role_of(msgs));
          auto body = fmt->body_ids(*tok, msgs);
          ids.insert(ids.end(), body.begin(), body.end());
          out["ids"] = ids;
        } else {
#ifndef GUARD_TOKENS_ONLY
          auto& g = guards[opts];
          if (!g) g = std::make_unique<Classifier>(pte, options_from_json(opts));
          out = json::parse(g->classify(msgs).json());
#endif
        }
      } catch (const std::exception& e) {
        out = {{"error", e.what()}};
      }
      std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n" << std::flush;
    }
  } catch (const std::exception& e) {
    fprintf(stderr, "guard_parity: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
