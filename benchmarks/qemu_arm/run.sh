#!/usr/bin/env bash
# ARM correctness without a phone: the same guard .pte on x86_64 and on aarch64 Linux under qemu-user.
#
#   sudo bash benchmarks/qemu_arm/run.sh            # as root: apt, debootstrap, chroot and bind mounts
#
# Steps (each skipped when already done; see docs/android.md "ARM correctness under qemu-user"):
#   1. Debian packages: qemu-user-static binfmt-support debootstrap, the aarch64 cross compiler, pthreadpool.h.
#   2. An arm64 Debian bookworm userland in $ARM_ROOT (debootstrap; binfmt runs its aarch64 binaries through qemu),
#      with python3.11, libpython3.11 and libatomic1.
#   3. aarch64 wheels from PyPI (pip download --platform manylinux_2_28_aarch64): executorch 1.4.1, torch 2.13.0,
#      tokenizers, numpy and the pure-Python imports, installed --no-deps into a venv inside the userland.
#   4. Stubs for the CUDA libraries PyPI's aarch64 torch 2.13.0 links against (cuda_stubs.py: no GPU code runs).
#   5. Two tiny guards exported on x86 (`guard tiny-model`, a copy with a biased output layer, `guard export --quant
#      8da4w`), classified by the project's Guard/PteRunner on x86 and on aarch64; the C++ guard_runner (android_runner/) built for both and run on the
#      bench prompts; compared within tolerance -> benchmarks/results/qemu_arm.{json,md}.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
ARM_ROOT=${ARM_ROOT:-/work/arm64root}       # outside the repo: ~2.5 GB with the wheels and venv
WORK=${WORK:-/work/armwork}                 # models and intermediate outputs
PY=${PY:-$REPO/.venv/bin/python}
SP=$ARM_ROOT/opt/venv/lib/python3.11/site-packages
PLATS="--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64"
log() { echo "[qemu_arm] $*" >&2; }
in_arm() { chroot "$ARM_ROOT" /usr/bin/env LD_LIBRARY_PATH=/opt/cuda-stubs PYTHONPATH=/repo "$@"; }

# 1. host packages
need=""
for p in qemu-user-static binfmt-support debootstrap gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libpthreadpool-dev cmake; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
[ -z "$need" ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need; }
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true

# 2. arm64 userland
if [ ! -x "$ARM_ROOT/usr/bin/python3.11" ]; then
  log "debootstrap arm64 bookworm into $ARM_ROOT"
  debootstrap --arch arm64 --variant=minbase --include=python3.11,python3.11-venv,ca-certificates,libgomp1,libatomic1,libpython3.11 \
    bookworm "$ARM_ROOT" http://deb.debian.org/debian
fi
chroot "$ARM_ROOT" dpkg -s libatomic1 libpython3.11 >/dev/null 2>&1 ||
  chroot "$ARM_ROOT" /bin/sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q libatomic1 libpython3.11"
mkdir -p "$ARM_ROOT/repo" "$ARM_ROOT/work" "$WORK"
# Unmount on exit: a bind mount of the repo left inside $ARM_ROOT would make `rm -rf $ARM_ROOT` delete the repo.
cleanup() { for m in proc/cpuinfo work repo sys proc; do mountpoint -q "$ARM_ROOT/$m" && umount "$ARM_ROOT/$m" || true; done; }
trap cleanup EXIT
mountpoint -q "$ARM_ROOT/proc" || mount -t proc proc "$ARM_ROOT/proc"
mountpoint -q "$ARM_ROOT/sys" || mount --bind /sys "$ARM_ROOT/sys"
mountpoint -q "$ARM_ROOT/repo" || mount --bind "$REPO" "$ARM_ROOT/repo"
mountpoint -q "$ARM_ROOT/work" || mount --bind "$WORK" "$ARM_ROOT/work"
# qemu-user shows the host's x86 /proc/cpuinfo; cpuinfo (in torch, XNNPACK, ExecuTorch) then crashes at load.
# Give the chroot an aarch64 one (2 Neoverse-N1-like cores; the features qemu's default `max` CPU has anyway).
if ! grep -q "CPU implementer" "$ARM_ROOT/proc/cpuinfo"; then
  for i in $(seq 0 $(($(nproc) - 1))); do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$i"
  done > "$WORK/cpuinfo.arm64"
  mount --bind "$WORK/cpuinfo.arm64" "$ARM_ROOT/proc/cpuinfo"
fi

# 3. aarch64 wheels and venv
if [ ! -f "$SP/executorch/extension/pybindings/_portable_lib.cpython-311-aarch64-linux-gnu.so" ]; then
  W=$ARM_ROOT/wheels
  mkdir -p "$W"
  pip download -q executorch==1.4.1 torch==2.13.0 --no-deps $PLATS --only-binary=:all: --python-version 3.11 -d "$W"
  pip download -q numpy tokenizers==0.22.2 $PLATS --only-binary=:all: --python-version 3.11 -d "$W"
  pip download -q filelock typing-extensions sympy networkx jinja2 fsspec mpmath markupsafe pyyaml packaging ruamel.yaml \
    tabulate flatbuffers expecttest parameterized kgb $PLATS --platform any --only-binary=:all: --python-version 3.11 -d "$W"
  [ -x "$ARM_ROOT/opt/venv/bin/python" ] || chroot "$ARM_ROOT" /usr/bin/python3.11 -m venv /opt/venv
  chroot "$ARM_ROOT" /bin/sh -c '/opt/venv/bin/pip install -q --no-index --no-deps /wheels/*.whl'
fi

# 4. CUDA stubs
[ -f "$ARM_ROOT/opt/cuda-stubs/libcudart.so.13" ] || "$PY" "$REPO/benchmarks/qemu_arm/cuda_stubs.py" "$SP" "$ARM_ROOT" "$ARM_ROOT/opt/cuda-stubs"

# 5. models, runs on both architectures, C++ runner on both, comparison
cd "$REPO"
[ -f "$WORK/tiny/config.json" ] || nice -n 10 .venv/bin/guard tiny-model "$WORK/tiny"
# A random tiny guard answers "indeterminate" (its first token is neither safe nor unsafe); the biased copy scales the
# safe/unsafe rows of the output layer so that verdicts vary and the unsafe path (forced "unsafe\nS", greedy decode) runs.
[ -f "$WORK/tiny-biased/config.json" ] || "$PY" benchmarks/qemu_arm/check.py bias "$WORK/tiny" "$WORK/tiny-biased"
for m in tiny tiny-biased; do
  [ -f "$WORK/$m-8da4w/model.pte" ] ||
    nice -n 10 .venv/bin/guard export --model "$WORK/$m" --out "$WORK/$m-8da4w" --quant 8da4w --group-size 32 --prune-vocab
  log "$m, x86_64: Guard over PteRunner"
  nice -n 10 "$PY" benchmarks/qemu_arm/check.py run --pte "$WORK/$m-8da4w/model.pte" --out "$WORK/$m-x86.json" 2>&1 |
    { grep -v -e cpuinfo -e Warn -e "Failed to load" || true; } >&2
  log "$m, aarch64 under qemu-user: the same"
  in_arm nice -n 10 /opt/venv/bin/python /repo/benchmarks/qemu_arm/check.py run --pte "/work/$m-8da4w/model.pte" --out "/work/$m-arm64.json" 2>&1 |
    { grep -v -e cpuinfo -e MIDR -e triton || true; } >&2
done
PTE_DIR=$WORK/tiny-biased-8da4w

log "C++ guard_runner: host build against the x86 wheel, cross build against the aarch64 wheel"
"$PY" -m guard.bench.prompts --tokenizer "$PTE_DIR" --prompt-tokens 16,40,128 --out "$PTE_DIR/guard_prompts.txt"
cmake -S android_runner -B "$WORK/build-x86" -DGUARD_RUNNER_FROM_WHEEL=ON -DPython3_EXECUTABLE="$PY" >/dev/null
nice -n 10 cmake --build "$WORK/build-x86" -j2 >/dev/null
INC=$SP/executorch/include
nice -n 10 aarch64-linux-gnu-g++ -std=c++17 -O2 -DC10_USING_CUSTOM_GENERATED_MACROS -DGUARD_ET_VERSION='"1.4.1"' \
  -I"$INC" -I"$INC/executorch/runtime/core/portable_type/c10" android_runner/guard_runner.cpp android_runner/support.cpp android_runner/guard/pte.cpp \
  -o "$WORK/guard_runner.arm64" -Wl,--no-as-needed "$SP/executorch/extension/pybindings/_portable_lib.cpython-311-aarch64-linux-gnu.so" \
  "$SP/executorch/kernels/quantized/libquantized_ops_aot_lib.so" "$ARM_ROOT/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0" \
  -Wl,--as-needed -Wl,--allow-shlib-undefined \
  -Wl,-rpath,/opt/venv/lib/python3.11/site-packages/executorch/extension/pybindings:/opt/venv/lib/python3.11/site-packages/executorch/kernels/quantized:/opt/venv/lib/python3.11/site-packages/torch/lib
rm -f "$WORK/cpp-x86.jsonl" "$WORK/cpp-arm64.jsonl"
(cd "$PTE_DIR" && GUARD_RUNNER_VERDICTS="$WORK/cpp-x86.jsonl" nice -n 10 "$WORK/build-x86/guard_runner" --model model.pte \
  --threads 2 --runs 1 --warmup 0 --prompt-tokens 16,40,128 --out "$WORK/cpp-x86-stats.json" 2>/dev/null)
in_arm nice -n 10 /bin/sh -c "cd /work/tiny-biased-8da4w && GUARD_RUNNER_VERDICTS=/work/cpp-arm64.jsonl /work/guard_runner.arm64 --model model.pte \
  --threads 2 --runs 1 --warmup 0 --prompt-tokens 16,40,128 --out /work/cpp-arm64-stats.json 2>/dev/null"

"$PY" benchmarks/qemu_arm/check.py compare --model "tiny random guard" "$WORK/tiny-x86.json" "$WORK/tiny-arm64.json" \
  --model "tiny guard, biased output layer" "$WORK/tiny-biased-x86.json" "$WORK/tiny-biased-arm64.json" \
  --cpp-x86 "$WORK/cpp-x86.jsonl" --cpp-arm64 "$WORK/cpp-arm64.jsonl" --out benchmarks/results/qemu_arm --command "bash benchmarks/qemu_arm/run.sh"
