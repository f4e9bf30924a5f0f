#!/usr/bin/env bash
# Builds the on-device guard (README.md):
#
#   bash android_runner/build.sh host      # x86_64/aarch64 Linux host, against the executorch pip wheel of .venv:
#                                          #   build-host/{libguard.so, libguard_jni.so, guard_classify, guard_parity,
#                                          #   guard_runner, guard-java, java/guard.jar}
#   bash android_runner/build.sh aarch64   # cross build for aarch64 Linux (aarch64-linux-gnu-g++, the aarch64
#                                          #   executorch wheel from PyPI); run under qemu-user in the userland of
#                                          #   tools/arm64_userland.sh (docs/android.md);
#                                          #   GUARD_AARCH64=tokens: only the static guard_tokens (no wheel)
#   bash android_runner/build.sh android   # libguard_jni.so for arm64-v8a with the Android NDK + guard.aar
#                                          #   (NOT BUILT HERE: no NDK is reachable from this machine)
#
# The tokenizer library is PyPI's pytorch-tokenizers 1.0.1 sdist (ExecuTorch's tokenizers, C++ sources with abseil,
# re2, pcre2, sentencepiece, json), fetched with pip, checked against its sha256 and built once into
# ${GUARD_NATIVE_CACHE:-~/.cache/guard-native} (outside the repo), so rebuilding the guard takes seconds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TARGET=${1:-host}
PY=${PY:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)  # a python that imports executorch (the wheel's runtime and headers)
CACHE=${GUARD_NATIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guard-native}
JOBS=${JOBS:-2}
TOK_VERSION=1.0.1
TOK_SHA256=19938c0efd5348fb0589610094c1c6bf6e055b20889f6250068d2b552a0b137b
log() { echo "[build.sh] $*" >&2; }
mkdir -p "$CACHE"
# One build at a time per cache: concurrent callers (parallel test workers, two shells) share the tokenizer build and
# the output folders. A second caller waits here, then finds the work done.
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.build.lock"
  flock 9
fi

fetch_tokenizers() {  # -> $CACHE/pytorch_tokenizers-1.0.1 (sources)
  local sdist=$CACHE/sdist/pytorch_tokenizers-$TOK_VERSION.tar.gz src=$CACHE/pytorch_tokenizers-$TOK_VERSION
  if [ ! -f "$sdist" ]; then
    log "pip download pytorch-tokenizers==$TOK_VERSION (sdist)"
    # --no-build-isolation: pip only reads the metadata, with the venv's setuptools (no build dependencies fetched)
    "$PY" -m pip download -q --no-binary pytorch-tokenizers --no-deps --no-build-isolation \
      "pytorch-tokenizers==$TOK_VERSION" -d "$CACHE/sdist"
  fi
  echo "$TOK_SHA256  $sdist" | sha256sum -c --quiet - || { log "sha256 mismatch for $sdist"; rm -f "$sdist"; exit 1; }
  if [ ! -f "$src/.extracted" ]; then
    rm -rf "$src" && tar -xzf "$sdist" -C "$CACHE" && touch "$src/.extracted"
  fi
  echo "$src"
}

build_tokenizers() {  # $1: build dir name, then extra cmake args -> the build dir
  local name=$1 src
  shift
  src=$(fetch_tokenizers)
  local b=$CACHE/$name
  if [ ! -f "$b/.built" ]; then
    log "building pytorch/tokenizers into $b (once; a few minutes)"
    nice -n 10 cmake -S "$src" -B "$b" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release -DSUPPORT_REGEX_LOOKAHEAD=ON \
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DTOKENIZERS_LOG_LEVEL=2 "$@" >"$b.log" 2>&1 || { tail -20 "$b.log" >&2; exit 1; }
    # Only what the HF/tiktoken tokenizers need: re2 (+ abseil), pcre2, the library and its PCRE2 fallback; the
    # sentencepiece objects are never referenced by the guard, so they are not built.
    (nice -n 10 make -C "$b" -j"$JOBS" re2 pcre2-8-static &&
      nice -n 10 make -C "$b" -j"$JOBS" tokenizers/fast regex_lookahead/fast) >>"$b.log" 2>&1 || { tail -20 "$b.log" >&2; exit 1; }
    touch "$b/.built"
  fi
  echo "$b"
}

build_java() {  # $1: output dir
  local out=$1 junit=/usr/share/java/junit-platform-console-standalone.jar
  command -v javac >/dev/null || { log "no javac (Debian: openjdk-17-jdk-headless); skipping the Java classes"; return; }
  rm -rf "$out/java/classes" && mkdir -p "$out/java/classes"
  javac -d "$out/java/classes" --release 11 "$HERE"/java/src/ondevice/guard/*.java
  (cd "$out/java/classes" && jar cf ../guard.jar ondevice)
  if [ -f "$junit" ]; then
    mkdir -p "$out/java/test-classes"
    javac -d "$out/java/test-classes" -cp "$out/java/classes:$junit" "$HERE"/java/test/ondevice/guard/*.java
  fi
}

case "$TARGET" in
host)
  TOK=$(build_tokenizers tokenizers-host)
  B=$HERE/build-host
  log "configuring and building $B"
  JNI=""
  if command -v javac >/dev/null; then JNI=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")/include; fi
  cmake -S "$HERE" -B "$B" -DGUARD_RUNNER_FROM_WHEEL=ON -DPython3_EXECUTABLE="$PY" -DJNI_INCLUDE="$JNI" \
    -DTOKENIZERS_SRC="$CACHE/pytorch_tokenizers-$TOK_VERSION" -DTOKENIZERS_BUILD="$TOK" >"$B.log" 2>&1 || { tail -20 "$B.log" >&2; exit 1; }
  nice -n 10 cmake --build "$B" -j"$JOBS" >>"$B.log" 2>&1 || { grep -E "error|Error" "$B.log" | head -20 >&2; exit 1; }
  build_java "$B"
  cat >"$B/guard-java" <<EOF
#!/bin/sh
# GuardModule from the command line (ondevice.guard.Cli), through the JNI library built beside this script.
exec java -Dguard.jni.library="$B/libguard_jni.so" -cp "$B/java/guard.jar" ondevice.guard.Cli "\$@"
EOF
  chmod +x "$B/guard-java"
  log "built: $(cd "$B" && ls -d libguard.so libguard_jni.so guard_classify guard_parity guard_latency guard_runner guard-java java/guard.jar 2>/dev/null | tr '\n' ' ')"
  ;;
aarch64)
  # Needs: g++-aarch64-linux-gnu (Debian). Two kinds of output:
  #   guard_tokens   the tokenizer and prompt core (format, tokenizer, pytorch/tokenizers) linked statically: runs
  #                  under plain qemu-user with no aarch64 userland (tests/native/test_native_aarch64.py);
  #   guard_classify, guard_parity, libguard.so   the whole core against the executorch aarch64 wheel's runtime
  #                  (_portable_lib); running them needs libpython3.11 and torch's aarch64 libraries:
  #                  tools/arm64_userland.sh assembles a light userland for qemu-user (its `run` wrapper; the
  #                  RUNPATH below is its layout, and benchmarks/qemu_arm/run.sh's chroot). GUARD_AARCH64=tokens
  #                  skips them.
  command -v aarch64-linux-gnu-g++ >/dev/null || { log "needs aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)"; exit 1; }
  TOK=$(build_tokenizers tokenizers-aarch64 -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
    -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++)
  B=$HERE/build-aarch64
  mkdir -p "$B"
  SRC=$CACHE/pytorch_tokenizers-$TOK_VERSION
  TOKINC="-I$SRC/include -I$SRC/third-party/json/single_include -I$SRC/third-party/re2 -I$SRC/third-party/abseil-cpp"
  TOKLIBS="-Wl,--whole-archive $TOK/libregex_lookahead.a -Wl,--no-whole-archive -Wl,--start-group $(find "$TOK" -name '*.a' ! -name libregex_lookahead.a | tr '\n' ' ') -Wl,--end-group"
  # Incremental: an output newer than every source (guard/, tools/, this script) is kept.
  current() { [ -f "$1" ] && [ -z "$(find "$HERE/guard" "$HERE/tools" "$HERE/build.sh" -newer "$1" -print -quit)" ]; }
  if ! current "$B/guard_tokens"; then
    log "cross-compiling guard_tokens (static) into $B"
    nice -n 10 aarch64-linux-gnu-g++ -std=c++17 -O2 -DTK_LOG_LEVEL=2 -DGUARD_TOKENS_ONLY $TOKINC "$HERE/tools/guard_parity.cpp" \
      "$HERE/guard/format.cpp" "$HERE/guard/tokenizer.cpp" -o "$B/guard_tokens" -static $TOKLIBS -lpthread
  fi
  if [ "${GUARD_AARCH64:-all}" = tokens ]; then
    log "built: $B/guard_tokens (aarch64, static)"
    exit 0
  fi
  W=$CACHE/wheels-aarch64
  if [ ! -d "$W/site/executorch" ]; then
    log "pip download executorch==1.4.1 (manylinux aarch64 wheel)"
    "$PY" -m pip download -q executorch==1.4.1 --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 -d "$W"
    mkdir -p "$W/site" && (cd "$W/site" && "$PY" -m zipfile -e "$W"/executorch-1.4.1-*.whl .)
  fi
  ET=$W/site/executorch
  INC=$ET/include
  CXXFLAGS="-std=c++17 -O2 -fPIC -DC10_USING_CUSTOM_GENERATED_MACROS -DTK_LOG_LEVEL=2 -I$INC -I$INC/executorch/runtime/core/portable_type/c10 \
    -I$B/inc $TOKINC"
  # pthreadpool.h (a plain C header) from the host's libpthreadpool-dev; everything else from the cross toolchain.
  mkdir -p "$B/inc" && cp /usr/include/pthreadpool.h "$B/inc/"
  RPATH=/opt/venv/lib/python3.11/site-packages/executorch/extension/pybindings:/opt/venv/lib/python3.11/site-packages/executorch/kernels/quantized:/opt/venv/lib/python3.11/site-packages/torch/lib
  LIBS="-Wl,--no-as-needed $ET/extension/pybindings/_portable_lib.cpython-311-aarch64-linux-gnu.so $ET/kernels/quantized/libquantized_ops_aot_lib.so -Wl,--as-needed -Wl,--allow-shlib-undefined -Wl,-rpath,$RPATH"
  if current "$B/libguard.so" && current "$B/guard_parity" && current "$B/guard_classify"; then
    log "up to date: $B"
    exit 0
  fi
  log "cross-compiling the core against the executorch aarch64 wheel into $B"
  for f in format tokenizer pte classifier long segments capi; do
    nice -n 10 aarch64-linux-gnu-g++ $CXXFLAGS -c "$HERE/guard/$f.cpp" -o "$B/$f.o"
  done
  for t in guard_classify guard_parity; do
    nice -n 10 aarch64-linux-gnu-g++ $CXXFLAGS "$HERE/tools/$t.cpp" "$B"/{format,tokenizer,pte,classifier,long,segments}.o -o "$B/$t" $TOKLIBS $LIBS
  done
  nice -n 10 aarch64-linux-gnu-g++ $CXXFLAGS -shared "$B"/{format,tokenizer,pte,classifier,long,segments,capi}.o -o "$B/libguard.so" $TOKLIBS $LIBS
  log "built: $B/guard_tokens $B/guard_classify $B/guard_parity $B/libguard.so (aarch64)"
  ;;
android)
  # Written from ExecuTorch's "Building for Android" and the NDK's CMake guide; NOT BUILT OR RUN HERE (no NDK).
  : "${ANDROID_NDK:?set ANDROID_NDK to the NDK root (r26 or newer)}"
  : "${EXECUTORCH_SRC:?set EXECUTORCH_SRC to an ExecuTorch v1.4.1 checkout with submodules}"
  ABI=${ANDROID_ABI:-arm64-v8a}
  TC=$ANDROID_NDK/build/cmake/android.toolchain.cmake
  ET_OUT=$HERE/build-android-et
  if [ ! -f "$ET_OUT/lib/cmake/ExecuTorch/executorch-config.cmake" ]; then
    cmake -S "$EXECUTORCH_SRC" -B "$ET_OUT/build" -DCMAKE_TOOLCHAIN_FILE="$TC" -DANDROID_ABI="$ABI" -DANDROID_PLATFORM=android-28 \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$ET_OUT" -DEXECUTORCH_BUILD_XNNPACK=ON \
      -DEXECUTORCH_BUILD_KERNELS_QUANTIZED=ON -DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON -DEXECUTORCH_BUILD_EXTENSION_TENSOR=ON \
      -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON \
      -DEXECUTORCH_BUILD_EXTENSION_NAMED_DATA_MAP=ON -DEXECUTORCH_BUILD_EXTENSION_MODULE=ON
    cmake --build "$ET_OUT/build" -j"$JOBS" --target install
  fi
  B=$HERE/build-android-$ABI
  SRC=$(fetch_tokenizers)
  cmake -S "$HERE" -B "$B" -DCMAKE_TOOLCHAIN_FILE="$TC" -DANDROID_ABI="$ABI" -DANDROID_PLATFORM=android-28 \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$ET_OUT" -DEXECUTORCH_SRC="$EXECUTORCH_SRC" \
    -DTOKENIZERS_SRC="$SRC" -DGUARD_TOKENIZERS_SUBDIR=ON
  cmake --build "$B" -j"$JOBS" --target guard_jni guard guard_classify guard_runner
  # AAR: classes.jar + jni/<abi>/libguard_jni.so + AndroidManifest.xml (the Android Gradle plugin's layout).
  build_java "$B"
  A=$B/aar
  rm -rf "$A" && mkdir -p "$A/jni/$ABI"
  cp "$B/java/guard.jar" "$A/classes.jar"
  cp "$B/libguard_jni.so" "$A/jni/$ABI/"
  cat >"$A/AndroidManifest.xml" <<'EOF'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="ondevice.guard">
  <uses-sdk android:minSdkVersion="28" />
</manifest>
EOF
  (cd "$A" && jar cfM "$B/guard.aar" AndroidManifest.xml classes.jar jni)
  log "built $B/guard.aar"
  ;;
*)
  echo "usage: bash android_runner/build.sh host|aarch64|android" >&2
  exit 2
  ;;
esac
