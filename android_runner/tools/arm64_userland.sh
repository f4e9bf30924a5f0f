#!/usr/bin/env bash
# A light aarch64 userland (no debootstrap, no chroot, no root) in which qemu-user runs what
# `bash android_runner/build.sh aarch64` links against the executorch aarch64 wheel (guard_parity, guard_classify):
#
#   bash android_runner/build.sh aarch64 && bash android_runner/tools/arm64_userland.sh     # prints ROOT
#   ROOT/run android_runner/build-aarch64/guard_classify --pte model.pte --json "How do I bake bread?"
#
#   bash android_runner/tools/arm64_userland.sh python      # also Python's Guard on aarch64 (steps 8-11)
#   PYTHONPATH=$PWD ROOT/python -m guard classify --pte model.pte --json "How do I bake bread?"
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
# With `python` (steps 8-11: ~100 MB more; 28 MB of .debs and wheels, 9 MB of package lists):
#   usr/bin/python3.11, usr/lib/python3.11   Debian's arm64 interpreter (3.11, linked statically with libpython, so
#                                the wheels' Python C API imports resolve to it) and stdlib (python3.11-minimal,
#                                libpython3.11-minimal, libpython3.11-stdlib) and the libraries its extension modules
#                                link (libffi8, libssl3, libbz2-1.0, liblzma5, libuuid1), from the same apt-get download
#   opt/venv                     a venv over it (pyvenv.cfg): the runtime's aarch64 wheels (numpy, tokenizers; pytest
#                                and its dependencies, which tests/native's helpers import), exact versions and sha256
#                                pinned below; executorch's version.py and headers beside the runtime of step 4
#   GUARD_HOME/etlite/etlite-KEY.so  guard/runtime/etlite.cpp of this checkout cross-compiled with aarch64-linux-gnu-g++
#                                at the path and with the flags the aarch64 Python asks for (etlite.plan()), so its
#                                etlite.library() finds it built (no aarch64 g++ under qemu)
#   python                       qemu-aarch64 -L ROOT -cpu neoverse-n1 ROOT/opt/venv/bin/python3.11: the caller's
#                                environment passes through (PYTHONPATH=the checkout), PYTHONHOME is unset
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
# Step 10's aarch64 wheels: the versions of .venv when this was written (numpy, tokenizers: guard's runtime imports;
# the rest: pytest, which tests/native's helpers import).
WHEELS='numpy==2.4.6 --hash=sha256:0ab0a9c4ffb1a6d95ef519fe4247dba8eb6b18ad93999f76b7f657039acabd47
tokenizers==0.22.2 --hash=sha256:2249487018adec45d6e3554c71d46eb39fa8ea67156c640f7513eb26f318cec7
pytest==9.2.0 --hash=sha256:07acdcf88ec174f907dc01af70bf52d49b014bbab03faeeade31c96b18c2e588
pluggy==1.7.0 --hash=sha256:7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec
iniconfig==2.3.1 --hash=sha256:9121e2c1fdb355232495be3194c8dfe87ccc2d5dee45947b78e68f499790d7a7
packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
pygments==2.21.0 --hash=sha256:2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9'
log() { echo "[arm64_userland] $*" >&2; }
die() { log "$*"; exit 1; }
case "${1:-}" in ""|python) ;; *) die "usage: bash android_runner/tools/arm64_userland.sh [python]" ;; esac

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

# Debian's arm64 packages, unpacked into $A/x: the host's apt sources, a private state dir (no
# `dpkg --add-architecture`, nothing installed). The caller copies what it needs and removes $A.
A=$ROOT/apt
debs() {
  rm -rf "$A" && mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs" "$A/x"
  local O=(-q -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Architecture=arm64 -o APT::Architectures::=arm64
           -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  log "apt-get update (arm64 package lists, into $A) and download $*"
  apt-get "${O[@]}" update >"$A/log" 2>&1 || { tail -5 "$A/log" >&2; die "apt-get update for arm64 failed"; }
  (cd "$A/debs" && apt-get "${O[@]}" download "$@") >>"$A/log" 2>&1 || { tail -5 "$A/log" >&2; die "apt-get download failed"; }
  for d in "$A"/debs/*.deb; do dpkg -x "$d" "$A/x"; done
}

# 2. libpython3.11 and its libraries from Debian's arm64 packages.
if [ ! -f "$ROOT/usr/lib/aarch64-linux-gnu/.done" ]; then
  debs libpython3.11 libexpat1 zlib1g
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
if [ "${1:-}" != python ]; then
  log "ready: $ROOT/run BINARY ARGS ($(du -sh "$ROOT" | cut -f1))"
  echo "$ROOT"
  exit 0
fi

# 8. Debian's arm64 Python 3.11: the interpreter, the stdlib and what its extension modules link (not curses, dbm,
# readline, sqlite3, nis: nothing here imports them).
if [ ! -f "$ROOT/usr/lib/python3.11/.done" ]; then
  debs python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1
  rm -rf "$ROOT/usr/lib/python3.11" && mkdir -p "$ROOT/usr/bin"
  cp -a "$A/x/usr/bin/python3.11" "$ROOT/usr/bin/" && cp -a "$A/x/usr/lib/python3.11" "$ROOT/usr/lib/"
  cp -a "$A"/x/lib/aarch64-linux-gnu/*.so* "$A"/x/usr/lib/aarch64-linux-gnu/*.so* "$ROOT/usr/lib/aarch64-linux-gnu/"
  # Debian links it to /etc/python3.11/sitecustomize.py (apport's hook): an absolute link the host would resolve.
  rm -f "$ROOT/usr/lib/python3.11/sitecustomize.py"
  ls "$A"/debs >"$ROOT/usr/lib/python3.11/.done"
  rm -rf "$A"
fi

# 9. A venv over it whose site-packages is the directory of steps 3-4 (include-system-site-packages = false: no
# host dist-packages). The interpreter link is relative, so the host kernel resolves it inside ROOT.
V=$ROOT/opt/venv
if [ ! -f "$V/pyvenv.cfg" ]; then
  mkdir -p "$V/bin"
  ln -sfn ../../../usr/bin/python3.11 "$V/bin/python3.11"
  printf 'home = %s\ninclude-system-site-packages = false\nversion = 3.11\n' "$ROOT/usr/bin" >"$V/pyvenv.cfg"
fi

# 10. The runtime's aarch64 wheels (unpacked: no scripts to install), and executorch's version.py (etlite's cache key)
# and headers (etlite's cross-compile) beside the runtime libraries of step 4.
if ! cmp -s <(echo "$WHEELS") "$SP/.wheels.done"; then
  W=$ROOT/dl/wheels
  rm -rf "$W" && mkdir -p "$W"
  log "pip download the aarch64 wheels: $(echo "$WHEELS" | cut -d' ' -f1 | tr '\n' ' ')"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp --require-hashes \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    -r <(echo "$WHEELS") -d "$W" 2> >(grep -v "is ignored: it is neither" >&2) || die "pip download of the aarch64 wheels failed"
  "$PY" - "$SP" "$W"/*.whl <<'EOF'
import shutil, sys, zipfile
from pathlib import Path
sp = Path(sys.argv[1])
for whl in sys.argv[2:]:
    z = zipfile.ZipFile(whl)
    for top in {n.split("/")[0] for n in z.namelist()}:
        shutil.rmtree(sp / top, ignore_errors=True)
    z.extractall(sp)
EOF
  rm -rf "$W"
  echo "$WHEELS" >"$SP/.wheels.done"
fi
cp "$ET/version.py" "$SP/executorch/version.py"
if ! diff -rq "$ET/include" "$SP/executorch/include" >/dev/null 2>&1; then
  rm -rf "$SP/executorch/include" && cp -a "$ET/include" "$SP/executorch/include"
fi

# 11. The launcher, then etlite for this checkout's sources: the aarch64 Python says where and with which flags
# (etlite.plan()), the cross compiler builds it there.
cat >"$ROOT/python.tmp" <<EOF
#!/bin/sh
# Python 3.11 on aarch64 (Debian's arm64 interpreter, the venv beside this script: arm64_userland.sh python).
exec "$QEMU" -L "$ROOT" -cpu neoverse-n1 -U PYTHONHOME -E LD_LIBRARY_PATH=/opt/cuda-stubs "$V/bin/python3.11" "\$@"
EOF
chmod +x "$ROOT/python.tmp" && mv "$ROOT/python.tmp" "$ROOT/python"
plan=$(PYTHONPATH=$REPO "$ROOT/python" -c 'import json; from guard.runtime import etlite; out, flags, sources = etlite.plan(); print(json.dumps([str(out), *map(str, sources), *flags]))') \
  || die "the aarch64 Python cannot import guard.runtime.etlite from $REPO"
mapfile -t args < <("$PY" -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$plan")
if [ ! -f "${args[0]}" ]; then
  log "cross-compiling $(basename "${args[1]}") for the aarch64 Python into ${args[0]}"
  mkdir -p "$(dirname "${args[0]}")"
  nice -n 10 aarch64-linux-gnu-g++ "${args[1]}" -o "${args[0]}.$$.tmp" "${args[@]:2}" || die "cross-compiling etlite failed"
  mv "${args[0]}.$$.tmp" "${args[0]}"
fi
log "ready: $ROOT/run BINARY ARGS, $ROOT/python ARGS ($(du -sh "$ROOT" | cut -f1))"
echo "$ROOT"
