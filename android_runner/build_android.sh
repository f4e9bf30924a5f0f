#!/usr/bin/env bash
# Build guard_runner for Android (arm64-v8a, android-28+) with the NDK: ExecuTorch's runtime first, then guard_runner.
#
#   git clone -b v1.4.1 --recurse-submodules https://github.com/pytorch/executorch.git
#   ANDROID_NDK=$HOME/android-ndk-r27c EXECUTORCH_SRC=$PWD/executorch bash android_runner/build_android.sh
#
# Output: android_runner/build-android-arm64-v8a/guard_runner. Not built on the machine this was written on (no NDK
# reachable there): see README.md for what was compiled and run, and what was not.
set -euo pipefail
: "${ANDROID_NDK:?set ANDROID_NDK to the Android NDK root (r26 or newer)}"
: "${EXECUTORCH_SRC:?set EXECUTORCH_SRC to an executorch v1.4.1 checkout with submodules}"
ABI=${ANDROID_ABI:-arm64-v8a}
PLATFORM=${ANDROID_PLATFORM:-android-28}
JOBS=${JOBS:-$(nproc 2>/dev/null || sysctl -n hw.ncpu)}
HERE=$(cd "$(dirname "$0")" && pwd)
EXECUTORCH_SRC=$(cd "$EXECUTORCH_SRC" && pwd)
ET_INSTALL=${ET_INSTALL:-$EXECUTORCH_SRC/cmake-out-android-$ABI}
OUT=${OUT:-$HERE/build-android-$ABI}
TOOLCHAIN=$ANDROID_NDK/build/cmake/android.toolchain.cmake
[ -f "$TOOLCHAIN" ] || { echo "error: $TOOLCHAIN not found: ANDROID_NDK must be the NDK root" >&2; exit 2; }
[ -f "$EXECUTORCH_SRC/backends/xnnpack/third-party/XNNPACK/CMakeLists.txt" ] ||
  { echo "error: $EXECUTORCH_SRC has no submodules: git submodule update --init --recursive" >&2; exit 2; }
ANDROID_ARGS=(-DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" -DANDROID_ABI="$ABI" -DANDROID_PLATFORM="$PLATFORM" -DCMAKE_BUILD_TYPE=Release)

# 1. ExecuTorch for Android: core runtime, XNNPACK, quantized + optimized CPU kernels, tensor/threadpool extensions
#    (module/data loader/LLM runner too: guard_runner does not need them, GUARD_RUNNER_LLM_STATS uses llm/runner).
if [ ! -f "$ET_INSTALL/lib/cmake/ExecuTorch/executorch-config.cmake" ]; then
  cmake -S "$EXECUTORCH_SRC" -B "$ET_INSTALL/build" "${ANDROID_ARGS[@]}" -DCMAKE_INSTALL_PREFIX="$ET_INSTALL" \
    -DPYTHON_EXECUTABLE="$(command -v python3)" \
    -DEXECUTORCH_BUILD_XNNPACK=ON \
    -DEXECUTORCH_BUILD_KERNELS_QUANTIZED=ON \
    -DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON \
    -DEXECUTORCH_BUILD_EXTENSION_TENSOR=ON \
    -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON \
    -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON \
    -DEXECUTORCH_BUILD_EXTENSION_NAMED_DATA_MAP=ON \
    -DEXECUTORCH_BUILD_EXTENSION_MODULE=ON \
    -DEXECUTORCH_BUILD_EXTENSION_LLM=ON \
    -DEXECUTORCH_BUILD_EXTENSION_LLM_RUNNER=ON \
    -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=OFF \
    -DEXECUTORCH_ENABLE_LOGGING=ON
  cmake --build "$ET_INSTALL/build" -j"$JOBS" --target install
fi

# 2. guard_runner against that install.
cmake -S "$HERE" -B "$OUT" "${ANDROID_ARGS[@]}" -DCMAKE_PREFIX_PATH="$ET_INSTALL" -DEXECUTORCH_SRC="$EXECUTORCH_SRC" \
  -DGUARD_RUNNER_LLM_STATS="${GUARD_RUNNER_LLM_STATS:-OFF}"
cmake --build "$OUT" -j"$JOBS"
echo "built $OUT/guard_runner"
echo "run:   guard bench out/model.pte --device android --runner $OUT/guard_runner"
