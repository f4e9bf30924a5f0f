// Options from JSON (the C API's and the JNI's way to pass them):
//   {"tokenizer": path, "format": path, "categories": ["S1", ...] | {"S15": "Name. description", ...},
//    "exclude": ["S6"], "renumber": false, "threshold": 0.5, "block_indeterminate": true, "calibrated": true,
//    "trust_tokenizer": false, "long_policy": "windows" | "last_turns" | "error",
//    "segment_checks": 4}
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "classifier.h"

namespace guard {

inline Options options_from_json(const std::string& text) {
  Options o;
  if (text.empty()) return o;
  nlohmann::ordered_json j;  // ordered: categories keep the order they are given in
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const std::exception&) {
    fail("options are not valid JSON");
  }
  if (!j.is_object()) fail("options must be a JSON object");
  static const char* known[] = {"tokenizer", "format", "categories", "exclude", "renumber", "threshold",
                                "block_indeterminate", "calibrated", "trust_tokenizer", "long_policy", "segment_checks"};
  for (auto& [k, v] : j.items())
    if (std::find(std::begin(known), std::end(known), k) == std::end(known)) fail("unknown option '" + k + "'");
  try {
    o.tokenizer = j.value("tokenizer", "");
    o.format = j.value("format", "");
    o.policy.renumber = j.value("renumber", false);
    o.threshold = j.value("threshold", 0.5);
    o.block_indeterminate = j.value("block_indeterminate", true);
    o.calibrated = j.value("calibrated", true);
    o.trust_tokenizer = j.value("trust_tokenizer", false);
    o.long_policy = j.value("long_policy", "windows");
    if (j.contains("segment_checks") && !j.at("segment_checks").is_number_integer())
      fail("segment_checks must be a whole number >= 0");
    o.segment_checks = j.value("segment_checks", 4);
    if (j.contains("exclude"))
      for (auto& c : j.at("exclude")) o.policy.excluded.push_back(c.get<std::string>());
    if (j.contains("categories")) {
      const auto& c = j.at("categories");
      if (c.is_array())
        for (auto& code : c) o.policy.categories.push_back({code.get<std::string>(), "", ""});
      else if (c.is_object())
        for (auto& [code, value] : c.items()) o.policy.categories.push_back({code, "", value.get<std::string>()});
      if (!(c.is_array() || c.is_object()) || o.policy.categories.empty())
        fail("categories must be a non-empty array of codes or object {code: description}");
    }
  } catch (const nlohmann::ordered_json::exception&) {
    fail("options have a value of the wrong type");
  }
  return o;
}

}  // namespace guard
