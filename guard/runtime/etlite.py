"""etlite.cpp through ctypes: the ExecuTorch runtime without importing torch (see the .cpp for why).

``library()`` compiles etlite.cpp (and the .pte layer it includes, pte_program.h) once with g++ against the
executorch wheel (its headers and _portable_lib, which exports the runtime symbols) into GUARD_HOME/etlite/, keyed by
the sources, the executorch version and the Python ABI, and returns the loaded ctypes library, or None when it cannot
be built (no compiler, other headers): callers then fall back to the wheel's Python bindings, which need torch.
GUARD_NO_ETLITE=1 forces the fallback. ``plan()`` is the path, flags and sources ``build()`` compiles with; for a
Python with no compiler (aarch64 under qemu), the same flags with a cross compiler put the library where
``library()`` finds it (android_runner/tools/arm64_userland.sh python).

On x86-64 Linux the library links a private copy of _portable_lib that does not load libtorch (about 50 MiB less
resident; guard.runtime.etlite_notorch), and falls back to the wheel's _portable_lib (which maps libtorch_cpu) when
that copy cannot be made or checked; GUARD_ETLITE_TORCH=1 skips the copy.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).with_name("etlite.cpp")
# The .pte layer etlite.cpp includes (shared with android_runner's native guard): package data beside it, so an
# installed package builds the same library.
HEADERS = [Path(__file__).with_name(n) for n in ("pte_program.h", "pte_common.h")]
# The torch-free build's own pthreadpool, embedding_4bit and stubs (guard.runtime.etlite_notorch).
NOTORCH_SOURCES = [Path(__file__).with_name(n) for n in ("etlite_pool.cpp", "etlite_notorch.cpp")]
_LIB: list = []  # [ctypes.CDLL | None] once tried
BUILT: list = []  # [the loaded library's file name]: identifies the build (guard.runtime.prefix keys on it)
_LOCK = __import__("threading").Lock()


def executorch_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def wheel_paths(et: Path) -> dict:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return {"portable": et / "extension" / "pybindings" / f"_portable_lib{suffix}",
            "quantized": et / "kernels" / "quantized" / "libquantized_ops_aot_lib.so",
            "include": et / "include"}


def _target(et: Path, flags: list[str], sources: list[Path]) -> Path:
    from guard.defaults import HOME

    version = (et / "version.py").read_text() if (et / "version.py").is_file() else ""
    text = b"".join(f.read_bytes() for f in (*sources, *HEADERS))
    key = hashlib.sha256(text + "\0".join([version, sys.version, *flags]).encode()).hexdigest()[:16]
    return HOME / "etlite" / f"etlite-{key}.so"


def _runtime_copies(et: Path, portable: Path) -> tuple[Path, Path]:
    """Where the torch-free copies of _portable_lib and of ExecuTorch's core go (guard.runtime.etlite_notorch), keyed
    by the executorch version and the runtime file."""
    from guard.defaults import HOME
    from guard.runtime import etlite_notorch

    version = (et / "version.py").read_text() if (et / "version.py").is_file() else ""
    st = portable.stat()
    parts = [etlite_notorch.LAYOUT, version, sys.version, str(st.st_size), str(st.st_mtime_ns)]
    k = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return HOME / "etlite" / f"etlite-rt-{k}.so", HOME / "etlite" / f"etlite-core-{k}.so"


def plan(et: Path | None = None, notorch: bool = False) -> tuple[Path, list[str], list[Path]]:
    """-> (the library's cache path, the compiler flags, the sources) that build() compiles with g++ for this
    interpreter and executorch. A cross compiler takes the same flags: android_runner/tools/arm64_userland.sh asks
    an aarch64 Python under qemu for its plan (the wheel's link: notorch is x86-64 only) and compiles it there with
    aarch64-linux-gnu-g++, so that Python finds it built.

    notorch: link a copy of _portable_lib that does not load libtorch (guard.runtime.etlite_notorch), with the
    pthreadpool, embedding_4bit and stub definitions of NOTORCH_SOURCES."""
    et = et or executorch_dir()
    p = wheel_paths(et)
    inc = p["include"]
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", f"-I{inc}", f"-I{inc / 'executorch/runtime/core/portable_type/c10'}",
             "-DC10_USING_CUSTOM_GENERATED_MACROS"]
    sources = [SOURCE]
    torch_lib = et.parent / "torch" / "lib"
    if notorch:
        rt, core = _runtime_copies(et, p["portable"])
        sources += NOTORCH_SOURCES
        flags += ["-DETLITE_NOTORCH", f'-DETLITE_TORCH_CPU="{torch_lib / "libtorch_cpu.so"}"', "-pthread",
                  f"-L{rt.parent}", "-Wl,--no-as-needed", f"-l:{rt.name}", f"-l:{core.name}", "-Wl,--as-needed",
                  "-Wl,-rpath,$ORIGIN"]
    else:
        flags += ["-Wl,--no-as-needed", str(p["portable"]), "-Wl,--as-needed", f"-Wl,-rpath,{p['portable'].parent}"]
    flags += [f"-Wl,-rpath-link,{torch_lib}", f"-Wl,-rpath-link,{et / 'backends' / 'qualcomm'}",
              "-Wl,--allow-shlib-undefined", "-ldl"]
    return _target(et, flags, sources), flags, sources


def build(et: Path | None = None, notorch: bool = False) -> Path:
    """Compile etlite.cpp (about 20 s) unless the cached build is current; -> the .so path. Raises on failure;
    with notorch, also when the torch-free link cannot be made safely (plan())."""
    et = et or executorch_dir()
    p = wheel_paths(et)
    out, flags, sources = plan(et, notorch)
    if notorch:
        rt, core = _runtime_copies(et, p["portable"])
    rejected = out.with_suffix(".rejected")
    if notorch and rejected.is_file():
        raise RuntimeError(f"{out.name} could not be built before ({rejected.read_text().strip()[:300]}); remove "
                           f"{rejected} to retry")
    if out.is_file() and (not notorch or (rt.is_file() and core.is_file())):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if not notorch:
        _compile(sources, flags, out)
        return out
    from guard.runtime import etlite_notorch

    try:  # any failure is kept (the old link is used instead), so later starts do not read and compile again
        required = etlite_notorch.prepare(p["portable"], et, rt, core)
        if not out.is_file():  # else only the copies were missing
            _compile(sources, flags, out, check=lambda tmp: etlite_notorch.check(tmp, required))
    except Exception as e:
        rejected.write_text(f"{type(e).__name__}: {e}\n")
        raise
    return out


def _compile(sources: list[Path], flags: list[str], out: Path, check=None) -> None:
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run(["g++", *map(str, sources), "-o", str(tmp), *flags], capture_output=True, text=True)
    try:
        if r.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{r.stderr[-2000:]}")
        if check:
            check(tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def library():
    """The loaded etlite library (built on first use), or None when unavailable."""
    with _LOCK:
        return _LIB[0] if _LIB else _library()


def notorch_wanted() -> bool:
    """The torch-free runtime copy is tried first (x86-64 Linux) unless GUARD_ETLITE_TORCH=1."""
    from guard.runtime import etlite_notorch

    return etlite_notorch.supported() and os.environ.get("GUARD_ETLITE_TORCH", "") in ("", "0")


def _load(et: Path, notorch: bool):
    path = build(et, notorch=notorch)
    if notorch:
        # libc10 by path first: the runtime copy names it without a search path. embedding_4bit is etlite's own
        # there (etlite_notorch.cpp).
        from guard.runtime import etlite_notorch

        etlite_notorch.preload(et)
    lib = ctypes.CDLL(str(path))
    if not notorch:
        # etlite needs _portable_lib (the runtime, XNNPACK, portable kernels; loading it maps libtorch_cpu but
        # imports no Python torch); the quantized kernels (embedding_4bit) register into it when loaded.
        ctypes.CDLL(str(wheel_paths(et)["quantized"]))
    BUILT.append(path.name)
    return lib


def _library():
    # ctypes releases the GIL while loading, so this can overlap with the tokenizer (PteRunner).
    lib = None
    if not os.environ.get("GUARD_NO_ETLITE"):
        et = executorch_dir()
        for notorch in ([True] if notorch_wanted() else []) + [False]:
            try:
                lib = _load(et, notorch)
                _declare(lib)
                break
            except Exception as e:  # no compiler or headers: the caller falls back to the Python bindings
                lib = None
                if os.environ.get("GUARD_DEBUG"):
                    what = "etlite's torch-free runtime" if notorch else "etlite"
                    print(f"guard: {what} unavailable ({e})", file=sys.stderr)
    _LIB.append(lib)
    return lib


def _declare(lib) -> None:
    c = ctypes
    P, I, S, E = c.c_void_p, c.c_int, c.c_size_t, c.c_char_p
    lib.etl_open.argtypes, lib.etl_open.restype = [E, I, E, E, S], P
    lib.etl_close.argtypes, lib.etl_close.restype = [P], None
    lib.etl_threads.argtypes, lib.etl_threads.restype = [I], I
    lib.etl_weight_cache_enabled.argtypes, lib.etl_weight_cache_enabled.restype = [], I
    lib.etl_num_methods.argtypes, lib.etl_num_methods.restype = [P], I
    lib.etl_method_name.argtypes, lib.etl_method_name.restype = [P, I], E
    lib.etl_load.argtypes, lib.etl_load.restype = [P, E, E, S], I
    lib.etl_constant.argtypes = [P, E, c.POINTER(c.c_int64), c.POINTER(c.c_double), c.POINTER(I), I, E, S, E, S]
    lib.etl_constant.restype = I
    lib.etl_step.argtypes = [P, E, c.POINTER(c.c_int64), c.POINTER(c.c_int64), I, c.c_int64, c.POINTER(c.c_float), I,
                             c.POINTER(c.c_float), I, E, S]
    lib.etl_step.restype = I
    lib.etl_num_arenas.argtypes, lib.etl_num_arenas.restype = [P], I
    lib.etl_arena.argtypes, lib.etl_arena.restype = [P, I, c.POINTER(S)], c.POINTER(c.c_uint8)


class Program:
    """A loaded .pte: method names, constant methods, and guard steps returning numpy logits."""

    def __init__(self, lib, path: str, weight_cache: bool = True, packed_cache: str | None = None):
        self._lib = lib
        self._err = ctypes.create_string_buffer(512)
        self._h = lib.etl_open(str(path).encode(), int(weight_cache), (packed_cache or "").encode(), self._err, 512)
        if not self._h:
            raise RuntimeError(self._err.value.decode(errors="replace"))
        self.method_names = {lib.etl_method_name(self._h, i).decode() for i in range(lib.etl_num_methods(self._h))}

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h:
            self._lib.etl_close(h)

    def constant(self, name: str) -> list:
        c = ctypes
        n = 256
        ints, floats, kinds = (c.c_int64 * n)(), (c.c_double * n)(), (c.c_int * n)()
        text = c.create_string_buffer(4096)
        k = self._lib.etl_constant(self._h, name.encode(), ints, floats, kinds, n, text, 4096, self._err, 512)
        if k < 0:
            raise RuntimeError(self._err.value.decode(errors="replace"))
        return [ints[i] if kinds[i] == 0 else text.value.decode() if kinds[i] == 1 else floats[i] for i in range(k)]

    def load(self, name: str) -> None:
        if self._lib.etl_load(self._h, name.encode(), self._err, 512) != 0:
            raise RuntimeError(self._err.value.decode(errors="replace"))

    def arenas(self) -> list:
        """The planned-memory arenas as writable uint8 numpy views (valid while this Program lives)."""
        import numpy as np

        out = []
        for i in range(self._lib.etl_num_arenas(self._h)):
            n = ctypes.c_size_t()
            p = self._lib.etl_arena(self._h, i, ctypes.byref(n))
            out.append(np.ctypeslib.as_array(p, shape=(n.value,)) if n.value else np.empty(0, np.uint8))
        return out

    def step(self, name: str, tokens: list[int], pos: list[int], last: int, width: int, keys=None):
        """-> float32 numpy logits (a fresh array) of ``name``(tokens[1, T], pos[T], [last][, keys[1, S]]);
        ``keys``: a float32 numpy vector of key positions, for files with an attention span."""
        import numpy as np

        c = ctypes
        T = len(tokens)
        tok = (c.c_int64 * T)(*tokens)
        ps = (c.c_int64 * T)(*pos)
        out = np.empty(width, dtype=np.float32)
        kp = None if keys is None else keys.ctypes.data_as(c.POINTER(c.c_float))
        v = self._lib.etl_step(self._h, name.encode(), tok, ps, T, last, kp, 0 if keys is None else len(keys),
                               out.ctypes.data_as(c.POINTER(c.c_float)), width, self._err, 512)
        if v < 0:
            raise RuntimeError(self._err.value.decode(errors="replace"))
        return out[:v]
