// guard.h over guard::Classifier: exceptions become NULL + a one-line message; nothing escapes into C.
#include "guard.h"

#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "classifier.h"
#include "options.h"

struct guard_module {
  std::unique_ptr<::guard::Classifier> c;
};
struct guard_stream {
  std::unique_ptr<::guard::Stream> s;
};

namespace {

char* dup(const std::string& s) {
  char* p = static_cast<char*>(malloc(s.size() + 1));
  if (p) memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

template <typename F>
auto guarded(char** err, F f) -> decltype(f()) {
  if (err) *err = nullptr;
  try {
    return f();
  } catch (const std::bad_alloc&) {
    if (err) *err = dup("out of memory");
  } catch (const std::exception& e) {
    if (err) *err = dup(e.what());
  } catch (...) {
    if (err) *err = dup("unknown error");
  }
  return decltype(f())();
}

std::vector<::guard::Message> messages(const guard_message_t* m, size_t n) {
  if (!m && n) ::guard::fail("messages is NULL");
  std::vector<::guard::Message> out;
  for (size_t i = 0; i < n; ++i) {
    if (!m[i].role || !m[i].text) ::guard::fail("message " + std::to_string(i) + ": role or text is NULL");
    size_t len = m[i].len == static_cast<size_t>(-1) ? strlen(m[i].text) : m[i].len;
    out.push_back({m[i].role, std::string(m[i].text, len)});
  }
  return out;
}

}  // namespace

extern "C" {

guard_t* guard_create(const char* pte, const char* options_json, char** err) {
  return guarded(err, [&]() -> guard_t* {
    if (!pte) ::guard::fail("model path is NULL");
    auto* g = new guard_module;
    try {
      g->c = std::make_unique<::guard::Classifier>(pte, ::guard::options_from_json(options_json ? options_json : ""));
    } catch (...) {
      delete g;
      throw;
    }
    return g;
  });
}

void guard_destroy(guard_t* g) { delete g; }

char* guard_classify(guard_t* g, const guard_message_t* m, size_t n, char** err) {
  return guarded(err, [&]() -> char* {
    if (!g) ::guard::fail("guard is NULL");
    return dup(g->c->classify(messages(m, n)).json());
  });
}

long guard_prompt_ids(guard_t* g, const guard_message_t* m, size_t n, long long* ids, size_t capacity, char** err) {
  long r = guarded(err, [&]() -> long {
    if (!g) ::guard::fail("guard is NULL");
    std::lock_guard<std::mutex> lock(g->c->mutex());
    auto v = g->c->prompt_ids(messages(m, n));
    for (size_t i = 0; i < v.size() && i < capacity; ++i) ids[i] = v[i];
    return static_cast<long>(v.size());
  });
  return err && *err ? -1 : r;
}

guard_stream_t* guard_stream_open(guard_t* g, const guard_message_t* m, size_t n, int check_every, char** err) {
  return guarded(err, [&]() -> guard_stream_t* {
    if (!g) ::guard::fail("guard is NULL");
    auto s = g->c->stream(messages(m, n), check_every);
    auto* out = new guard_stream;
    out->s = std::move(s);
    return out;
  });
}

char* guard_stream_feed(guard_stream_t* s, const char* bytes, size_t len, char** err) {
  return guarded(err, [&]() -> char* {
    if (!s || (!bytes && len)) ::guard::fail("stream or bytes is NULL");
    ::guard::Verdict v;
    return s->s->feed(std::string(bytes ? bytes : "", len), v) ? dup(v.json()) : nullptr;
  });
}

char* guard_stream_close(guard_stream_t* s, char** err) {
  return guarded(err, [&]() -> char* {
    if (!s) ::guard::fail("stream is NULL");
    return dup(s->s->close().json());
  });
}

void guard_stream_free(guard_stream_t* s) { delete s; }

void guard_free_string(char* s) { free(s); }

}  // extern "C"
