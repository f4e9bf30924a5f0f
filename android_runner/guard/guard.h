/* guard.h: the on-device Llama Guard classifier as a C API (for Swift, Kotlin/JNI, Rust, Python ctypes...).
 *
 *   char* err = NULL;
 *   guard_t* g = guard_create("model.pte", NULL, &err);       // tokenizer.json, guard_format.json beside it
 *   if (!g) { fprintf(stderr, "%s\n", err); guard_free_string(err); return 1; }
 *   guard_message_t msgs[] = {{"user", "How do I bake bread?", (size_t)-1}};
 *   char* verdict = guard_classify(g, msgs, 1, &err);          // JSON: the fields of `guard classify --json`
 *   ...
 *   guard_free_string(verdict);
 *   guard_destroy(g);
 *
 * Every function reports failure by returning NULL (or -1) and, when `err` is not NULL, a one-line message in
 * *err (free it with guard_free_string). Nothing aborts the process on bad input.
 * Threading: a guard_t may be shared by threads; calls on it are serialised by a lock inside (one KV cache).
 */
#ifndef GUARD_H
#define GUARD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct guard_module guard_t;
typedef struct guard_stream guard_stream_t;

typedef struct {
  const char* role; /* "user" or "assistant" */
  const char* text; /* UTF-8 */
  size_t len;       /* bytes of text; (size_t)-1: NUL-terminated */
} guard_message_t;

/* options_json (may be NULL): {"tokenizer": path, "categories": ["S1", ...] | {"S15": "Name. description"},
 * "exclude": ["S6"], "renumber": false, "threshold": 0.5, "block_indeterminate": true, "calibrated": true,
 * "trust_tokenizer": false (accept a tokenizer.json other than the one whose sha256 the .pte records),
 * "long_policy": "windows" | "last_turns" | "error" (a conversation longer than the model, as Python's
 * guard.runtime.long: judge the latest whole turns that fit, and overlapping windows of a last turn too long alone,
 * keeping the most unsafe; or only its last tokens; or refuse with an error),
 * "segment_checks": 4 (a prompt not judged unsafe whole is also judged cut at up to this many of its sentence or line
 * ends, as Python's guard.runtime.segments; 0: off)} */
guard_t* guard_create(const char* pte_path, const char* options_json, char** err);
void guard_destroy(guard_t* g);

/* The verdict as JSON: decision, categories [{code, name}], p_unsafe, blocked, role, raw, reason, prompt_tokens,
 * latency_ms, timings {prefill_ms, reused_tokens, prefilled_tokens}, margin, calibration {a, b, sha256} | null,
 * truncation: {} when the conversation fit, else the long-input policy's record {policy, prompt_tokens,
 * dropped_turns[, windows, window_tokens, chosen_window, chosen_span, window_p_unsafe, context_tokens]},
 * segments: {} when no cut of the prompt was judged, else {checked, chosen (index | null), p_unsafe [each cut's]}.
 * Free with guard_free_string. */
char* guard_classify(guard_t* g, const guard_message_t* messages, size_t n, char** err);

/* The prompt's token ids (policy head + conversation) into ids[0..capacity); returns the count, -1 on error. */
long guard_prompt_ids(guard_t* g, const guard_message_t* messages, size_t n, long long* ids, size_t capacity, char** err);

/* Streaming moderation of a response to `messages` (ending with a user turn): check every `check_every` tokens. */
guard_stream_t* guard_stream_open(guard_t* g, const guard_message_t* messages, size_t n, int check_every, char** err);
/* Feeds bytes (a split UTF-8 character waits for the rest). Returns a verdict JSON when a check ran, else NULL with
 * *err left NULL; on error NULL with *err set. */
char* guard_stream_feed(guard_stream_t* s, const char* bytes, size_t len, char** err);
char* guard_stream_close(guard_stream_t* s, char** err);
void guard_stream_free(guard_stream_t* s);

void guard_free_string(char* s);

#ifdef __cplusplus
}
#endif

#endif /* GUARD_H */
