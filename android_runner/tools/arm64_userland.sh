#!/usr/bin/env bash
# A light aarch64 userland (no debootstrap, no chroot, no root) in which qemu-user runs what
# `bash android_runner/build.sh aarch64` links against the executorch aarch64 wheel (guard_parity, guard_classify):
#
#   bash android_runner/build.sh aarch64 && bash android_runner/tools/arm64_userland.sh     # prints ROOT
#   ROOT/run android_runner/build-aarch64/guard_classify --pte model.pte --json "How do I bake bread?"
#
# Needs: g++-aarch64-linux-gnu, qemu-user-static (or qemu-user), apt-get and pip reaching Debian and PyPI.
# ROOT=${GUARD_ARM64_ROOT:-${GUARD_HOME:-~/.cache/ondevice-llamaguard}/arm64-userland}, each step done once:
#   lib/aarch64-linux-gnu -> /usr/aarch64-linux-gnu/lib   glibc, libstdc++, libgcc_s, libatomic of the cross toolchain
#   usr/lib/aarch64-linux-gnu/   libpython3.11 + libexpat1 + zlib1g from Debian's arm64 .debs: `apt-get download` with
#                                a private state dir (no `dpkg --add-architecture`, nothing installed), `dpkg -x`
#   opt/venv/.../torch/lib       torch 2.13.0's aarch64 wheel's libraries (_portable_lib.so NEEDs libtorch_python,
#                                libtorch, libtorch_cpu, libc10, and takes cpuinfo and the KleidiAI kernels from
#                                libtorch_cpu); the wheel (427 MB, sha256 pinned) is deleted once extracted
#   opt/venv/.../executorch      the wheel's _portable_lib.so and libquantized_ops_aot_lib.so that build.sh linked
#   opt/cuda-stubs               stand-ins for the CUDA libraries that wheel links (benchmarks/qemu_arm/cuda_stubs.py)
#   proc/cpuinfo, sys/.../midr_el1   an aarch64 CPU (qemu-user shows the host's x86 /proc/cpuinfo: cpuinfo crashes)
#   run                          qemu-aarch64 -L ROOT -cpu neoverse-n1 (its features are the cpuinfo's), with
#                                libpython3.11 preloaded: the wheel's libraries import Python's C API, which nothing
#                                else defines (no Python code runs)
# The paths under opt/venv are the RUNPATHs build.sh writes (the layout of benchmarks/qemu_arm's chroot): qemu's -L
# finds them in ROOT, and everything outside ROOT (the repository, models, /tmp) is the host's.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
CACHE=${GUARD_NATIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guard-native}   # build.sh's: the executorch aarch64 wheel
ROOT=${GUARD_ARM64_ROOT:-${GUARD_HOME:-$HOME/.cache/ondevice-llamaguard}/arm64-userland}
SP=$ROOT/opt/venv/lib/python3.11/site-packages
TORCH_WHEEL=torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl
TORCH_SHA256=092790c696a760c729fd5722835f50b9d81fd7c8f141571f3f3cf4081a8f664c
log() { echo "[arm64_userland] $*" >&2; }
die() { log "$*"; exit 1; }

[ -f /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || die "needs the aarch64 cross toolchain (apt-get install g++-aarch64-linux-gnu)"
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64) || die "needs qemu-user (apt-get install qemu-user-static)"
ET=$CACHE/wheels-aarch64/site/executorch
[ -f "$ET/extension/pybindings/_portable_lib.cpython-311-aarch64-linux-gnu.so" ] || die "run bash android_runner/build.sh aarch64 first (no $ET)"
mkdir -p "$ROOT"
exec 9>"$ROOT.lock"
flock 9  # one assembly at a time; a second caller finds the steps done

# 1. C runtime: the cross toolchain's own glibc/libstdc++ (Debian's arm64 libc6, repackaged by libc6-arm64-cross).
if [ ! -e "$ROOT/lib/ld-linux-aarch64.so.1" ]; then
  mkdir -p "$ROOT/lib"
  ln -sfn /usr/aarch64-linux-gnu/lib "$ROOT/lib/aarch64-linux-gnu"
  ln -sfn /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 "$ROOT/lib/ld-linux-aarch64.so.1"
fi

# 2. libpython3.11 and its libraries from Debian's arm64 packages (the host's apt sources, a private state dir).
if [ ! -f "$ROOT/usr/lib/aarch64-linux-gnu/.done" ]; then
  A=$ROOT/apt
  rm -rf "$A" && mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs" "$A/x"
  O=(-q -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Architecture=arm64 -o APT::Architectures::=arm64
     -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  log "apt-get update (arm64 package lists, into $A) and download libpython3.11 libexpat1 zlib1g"
  apt-get "${O[@]}" update >"$A/log" 2>&1 || { tail -5 "$A/log" >&2; die "apt-get update for arm64 failed"; }
  (cd "$A/debs" && apt-get "${O[@]}" download libpython3.11 libexpat1 zlib1g) >>"$A/log" 2>&1 || { tail -5 "$A/log" >&2; die "apt-get download failed"; }
  for d in "$A"/debs/*.deb; do dpkg -x "$d" "$A/x"; done
  # Copied, not unpacked in place: ROOT/lib/aarch64-linux-gnu is the cross toolchain's directory.
  mkdir -p "$ROOT/usr/lib/aarch64-linux-gnu"
  cp -a "$A"/x/lib/aarch64-linux-gnu/*.so* "$A"/x/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0 "$ROOT/usr/lib/aarch64-linux-gnu/"
  ls "$A"/debs >"$ROOT/usr/lib/aarch64-linux-gnu/.done"
  rm -rf "$A"
fi

# 3. torch's aarch64 libraries (PyPI's only torch 2.13.0 aarch64 wheel; its CUDA libraries are stubbed in step 5).
if [ ! -f "$SP/torch/lib/.done" ]; then
  W=$ROOT/dl
  mkdir -p "$W"
  if [ ! -f "$W/$TORCH_WHEEL" ]; then
    log "pip download torch==2.13.0 (manylinux aarch64 wheel, 427 MB)"
    "$PY" -m pip download -q torch==2.13.0 --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_aarch64 -d "$W" 2> >(grep -v "is ignored: it is neither" >&2)
  fi
  echo "$TORCH_SHA256  $W/$TORCH_WHEEL" | sha256sum -c --quiet - || { rm -f "$W/$TORCH_WHEEL"; die "sha256 mismatch for $TORCH_WHEEL"; }
  rm -rf "$SP/torch" && mkdir -p "$SP"
  "$PY" - "$W/$TORCH_WHEEL" "$SP" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("torch/lib/") and ".so" in n])
EOF
  rm -f "$W/$TORCH_WHEEL"
  touch "$SP/torch/lib/.done"
fi

# 4. The executorch runtime build.sh linked against (copied: RUNPATH $ORIGIN/../../../torch/lib must stay in ROOT).
for f in extension/pybindings/_portable_lib.cpython-311-aarch64-linux-gnu.so kernels/quantized/libquantized_ops_aot_lib.so; do
  if ! cmp -s "$ET/$f" "$SP/executorch/$f"; then
    mkdir -p "$(dirname "$SP/executorch/$f")" && cp "$ET/$f" "$SP/executorch/$f"
  fi
done

# 5. CUDA stand-ins: SONAMEs, version nodes and symbols only (no CUDA code runs: the guard runs on the CPU).
if [ ! -f "$ROOT/opt/cuda-stubs/.done" ]; then
  log "building stand-ins for the CUDA libraries torch links (benchmarks/qemu_arm/cuda_stubs.py)"
  rm -rf "$ROOT/opt/cuda-stubs"
  "$PY" "$REPO/benchmarks/qemu_arm/cuda_stubs.py" "$SP" "$ROOT" "$ROOT/opt/cuda-stubs" >"$ROOT/cuda-stubs.log"
  touch "$ROOT/opt/cuda-stubs/.done"
fi

# 6. An aarch64 CPU for cpuinfo (in torch, XNNPACK, ExecuTorch) and oneDNN: Neoverse-N1 (Armv8.2 with dotprod,
# as in phones' big cores), one entry per host CPU (cpuinfo also reads the host's /sys/devices/system/cpu).
n=$(nproc --all)
if [ "$(grep -c '^processor' "$ROOT/proc/cpuinfo" 2>/dev/null)" != "$n" ]; then
  mkdir -p "$ROOT/proc"
  for i in $(seq 0 $((n - 1))); do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$i"
    d=$ROOT/sys/devices/system/cpu/cpu$i/regs/identification
    mkdir -p "$d" && echo 0x00000000414fd0c1 >"$d/midr_el1"
  done >"$ROOT/proc/cpuinfo"
fi

# 7. The runner.
cat >"$ROOT/run.tmp" <<EOF
#!/bin/sh
# Runs an aarch64 binary of android_runner/build-aarch64 in the userland beside this script (arm64_userland.sh).
exec "$QEMU" -L "$ROOT" -cpu neoverse-n1 -E LD_PRELOAD=/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0 \\
  -E LD_LIBRARY_PATH=/opt/cuda-stubs "\$@"
EOF
chmod +x "$ROOT/run.tmp" && mv "$ROOT/run.tmp" "$ROOT/run"
log "ready: $ROOT/run BINARY ARGS ($(du -sh "$ROOT" | cut -f1))"
echo "$ROOT"
