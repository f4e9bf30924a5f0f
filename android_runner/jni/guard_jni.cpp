// libguard_jni: ondevice.guard.GuardModule / GuardStream over guard::Classifier. Every C++ error becomes a
// GuardException with a one-line message; no exception crosses into the JVM, nothing aborts.
#include <jni.h>

#include <string>
#include <vector>

#include "../guard/classifier.h"
#include "../guard/options.h"

namespace {

using guard::fail;

// Java strings are UTF-16; the core reads UTF-8. (GetStringUTFChars gives "modified UTF-8": NUL as C0 80 and
// supplementary characters as surrogate pairs, which is not what the tokenizer must see.)
std::string utf8(JNIEnv* env, jstring s) {
  if (!s) fail("text is null");
  jsize n = env->GetStringLength(s);
  std::vector<jchar> u(static_cast<size_t>(n));
  env->GetStringRegion(s, 0, n, u.data());
  std::string out;
  for (jsize i = 0; i < n; ++i) {
    char32_t c = u[i];
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && u[i + 1] >= 0xdc00 && u[i + 1] <= 0xdfff)
      c = 0x10000 + ((c - 0xd800) << 10) + (u[++i] - 0xdc00);
    else if (c >= 0xd800 && c <= 0xdfff)
      fail("text is not valid UTF-8 (lone surrogate)");
    out += guard::utf8_encode(c);
  }
  return out;
}

jstring jstr(JNIEnv* env, const std::string& s) {
  std::vector<char32_t> cps;
  if (!guard::utf8_decode(s, cps)) cps.assign(s.begin(), s.end());  // not UTF-8: bytes as Latin-1
  std::vector<jchar> u;
  for (char32_t c : cps) {
    if (c >= 0x10000) c -= 0x10000, u.push_back(static_cast<jchar>(0xd800 + (c >> 10))), u.push_back(static_cast<jchar>(0xdc00 + (c & 0x3ff)));
    else u.push_back(static_cast<jchar>(c));
  }
  return env->NewString(u.data(), static_cast<jsize>(u.size()));
}

std::vector<guard::Message> messages(JNIEnv* env, jobjectArray roles, jobjectArray texts) {
  std::vector<guard::Message> out;
  jsize n = env->GetArrayLength(roles);
  for (jsize i = 0; i < n; ++i) {
    auto r = static_cast<jstring>(env->GetObjectArrayElement(roles, i));
    auto t = static_cast<jstring>(env->GetObjectArrayElement(texts, i));
    out.push_back({utf8(env, r), utf8(env, t)});
    env->DeleteLocalRef(r);
    env->DeleteLocalRef(t);
  }
  return out;
}

void throw_guard(JNIEnv* env, const char* msg) {
  if (env->ExceptionCheck()) return;
  jclass c = env->FindClass("ondevice/guard/GuardException");
  if (c) env->ThrowNew(c, msg);
}

template <typename T, typename F>
T guarded(JNIEnv* env, F f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw_guard(env, "out of memory");
  } catch (const std::exception& e) {
    throw_guard(env, e.what());
  } catch (...) {
    throw_guard(env, "unknown error");
  }
  return T();
}

jobject truncation(JNIEnv* env, const guard::Verdict& v) {  // Verdict.Truncation, or null
  if (!v.truncation) return nullptr;
  const guard::Truncation& t = *v.truncation;
  jclass cls = env->FindClass("ondevice/guard/Verdict$Truncation");
  if (!cls) fail("Verdict.Truncation class not found");
  jmethodID ctor = env->GetMethodID(cls, "<init>", "(Ljava/lang/String;JJIJI[J[DJ)V");
  if (!ctor) fail("Verdict.Truncation constructor not found");
  jlong span[2] = {t.span_begin, t.span_end};
  jlongArray chosen = env->NewLongArray(2);
  env->SetLongArrayRegion(chosen, 0, 2, span);
  jsize n = static_cast<jsize>(t.window_p_unsafe.size());
  jdoubleArray scores = env->NewDoubleArray(n);
  env->SetDoubleArrayRegion(scores, 0, n, t.window_p_unsafe.data());
  return env->NewObject(cls, ctor, jstr(env, t.policy), static_cast<jlong>(t.prompt_tokens), static_cast<jlong>(t.dropped_turns),
                        static_cast<jint>(t.windows), static_cast<jlong>(t.window_tokens), static_cast<jint>(t.chosen_window),
                        chosen, scores, static_cast<jlong>(t.context_tokens));
}

jobject segments(JNIEnv* env, const guard::Verdict& v) {  // Verdict.Segments, or null
  if (!v.segments) return nullptr;
  jclass cls = env->FindClass("ondevice/guard/Verdict$Segments");
  if (!cls) fail("Verdict.Segments class not found");
  jmethodID ctor = env->GetMethodID(cls, "<init>", "(II[D)V");
  if (!ctor) fail("Verdict.Segments constructor not found");
  jsize n = static_cast<jsize>(v.segments->p_unsafe.size());
  jdoubleArray scores = env->NewDoubleArray(n);
  env->SetDoubleArrayRegion(scores, 0, n, v.segments->p_unsafe.data());
  return env->NewObject(cls, ctor, static_cast<jint>(v.segments->checked), static_cast<jint>(v.segments->chosen), scores);
}

jobject verdict(JNIEnv* env, const guard::Verdict& v) {
  jclass cls = env->FindClass("ondevice/guard/Verdict");
  jclass str = env->FindClass("java/lang/String");
  if (!cls || !str) fail("Verdict class not found");
  jmethodID ctor = env->GetMethodID(cls, "<init>",
      "(Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/String;DDZLjava/lang/String;Ljava/lang/String;Ljava/lang/String;JDDJJ"
      "Ljava/lang/String;Londevice/guard/Verdict$Truncation;Londevice/guard/Verdict$Segments;Ljava/lang/String;)V");
  if (!ctor) fail("Verdict constructor not found");
  jsize n = static_cast<jsize>(v.categories.size());
  jobjectArray codes = env->NewObjectArray(n, str, nullptr), names = env->NewObjectArray(n, str, nullptr);
  for (jsize i = 0; i < n; ++i) {
    env->SetObjectArrayElement(codes, i, jstr(env, v.categories[i].code));
    env->SetObjectArrayElement(names, i, jstr(env, v.categories[i].name));
  }
  return env->NewObject(cls, ctor, jstr(env, v.decision), codes, names, v.p_unsafe, v.margin, static_cast<jboolean>(v.blocked),
                        jstr(env, v.role), jstr(env, v.raw), jstr(env, v.reason), static_cast<jlong>(v.prompt_tokens),
                        v.latency_ms, v.prefill_ms, static_cast<jlong>(v.reused_tokens),
                        static_cast<jlong>(v.prefilled_tokens),
                        v.calibration ? jstr(env, v.calibration->sha256) : nullptr, truncation(env, v), segments(env, v), jstr(env, v.json()));
}

guard::Classifier* module(jlong h) { return reinterpret_cast<guard::Classifier*>(h); }
guard::Stream* stream(jlong h) { return reinterpret_cast<guard::Stream*>(h); }

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_ondevice_guard_GuardModule_nativeCreate(JNIEnv* env, jclass, jstring pte, jstring opts) {
  return guarded<jlong>(env, [&] {
    auto* c = new guard::Classifier(utf8(env, pte), guard::options_from_json(utf8(env, opts)));
    return reinterpret_cast<jlong>(c);
  });
}

JNIEXPORT void JNICALL Java_ondevice_guard_GuardModule_nativeDestroy(JNIEnv*, jclass, jlong h) { delete module(h); }

JNIEXPORT jobject JNICALL Java_ondevice_guard_GuardModule_nativeClassify(JNIEnv* env, jclass, jlong h, jobjectArray roles,
                                                                         jobjectArray texts) {
  return guarded<jobject>(env, [&] { return verdict(env, module(h)->classify(messages(env, roles, texts))); });
}

JNIEXPORT jlongArray JNICALL Java_ondevice_guard_GuardModule_nativePromptIds(JNIEnv* env, jclass, jlong h, jobjectArray roles,
                                                                             jobjectArray texts) {
  return guarded<jlongArray>(env, [&] {
    std::vector<int64_t> ids;
    {
      std::lock_guard<std::mutex> lock(module(h)->mutex());
      ids = module(h)->prompt_ids(messages(env, roles, texts));
    }
    std::vector<jlong> j(ids.begin(), ids.end());
    jlongArray a = env->NewLongArray(static_cast<jsize>(j.size()));
    env->SetLongArrayRegion(a, 0, static_cast<jsize>(j.size()), j.data());
    return a;
  });
}

JNIEXPORT jlong JNICALL Java_ondevice_guard_GuardModule_nativeStreamOpen(JNIEnv* env, jclass, jlong h, jobjectArray roles,
                                                                         jobjectArray texts, jint every) {
  return guarded<jlong>(env, [&] {
    if (every < 1) fail("check_every must be at least 1 token");
    return reinterpret_cast<jlong>(module(h)->stream(messages(env, roles, texts), every).release());
  });
}

JNIEXPORT jobject JNICALL Java_ondevice_guard_GuardModule_nativeStreamFeed(JNIEnv* env, jclass, jlong s, jstring chunk) {
  return guarded<jobject>(env, [&]() -> jobject {
    guard::Verdict v;
    return stream(s)->feed(utf8(env, chunk), v) ? verdict(env, v) : nullptr;
  });
}

JNIEXPORT jobject JNICALL Java_ondevice_guard_GuardModule_nativeStreamClose(JNIEnv* env, jclass, jlong s) {
  return guarded<jobject>(env, [&] { return verdict(env, stream(s)->close()); });
}

JNIEXPORT void JNICALL Java_ondevice_guard_GuardModule_nativeStreamFree(JNIEnv*, jclass, jlong s) { delete stream(s); }

}  // extern "C"
