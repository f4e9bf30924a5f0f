"""etlite.cpp through ctypes: the ExecuTorch runtime without importing torch (see the .cpp for why).

``library()`` compiles etlite.cpp (and the .pte layer it includes, pte_program.h) once with g++ against the
executorch wheel (its headers and _portable_lib, which exports the runtime symbols) into GUARD_HOME/etlite/, keyed by
the sources, the executorch version and the Python ABI, and returns the loaded ctypes library, or None when it cannot
be built (no compiler, other headers): callers then fall back to the wheel's Python bindings, which need torch.
GUARD_NO_ETLITE=1 forces the fallback. ``plan()`` is the path and flags ``build()`` compiles with; for a Python with
no compiler (aarch64 under qemu), the same flags with a cross compiler put the library where ``library()`` finds it
(android_runner/tools/arm64_userland.sh python).
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
_LIB: list = []  # [ctypes.CDLL | None] once tried
BUILT: list = []  # [the loaded library's file name]: identifies the build (guard.runtime.prefix keys on it)
_LOCK = __import__("threading").Lock()


def _executorch_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def _paths(et: Path) -> dict:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return {"portable": et / "extension" / "pybindings" / f"_portable_lib{suffix}",
            "quantized": et / "kernels" / "quantized" / "libquantized_ops_aot_lib.so",
            "include": et / "include"}


def _target(et: Path, flags: list[str]) -> Path:
    from guard.defaults import HOME

    version = (et / "version.py").read_text() if (et / "version.py").is_file() else ""
    sources = b"".join(f.read_bytes() for f in (SOURCE, *HEADERS))
    key = hashlib.sha256(sources + "\0".join([version, sys.version, *flags]).encode()).hexdigest()[:16]
    return HOME / "etlite" / f"etlite-{key}.so"


def plan(et: Path | None = None) -> tuple[Path, list[str]]:
    """-> (the library's cache path, the compiler flags) for this interpreter and executorch: what build() compiles
    with g++. A cross compiler takes the same flags: android_runner/tools/arm64_userland.sh asks an aarch64 Python
    under qemu for its plan and compiles it there with aarch64-linux-gnu-g++, so that Python finds it built."""
    et = et or _executorch_dir()
    p = _paths(et)
    inc = p["include"]
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", f"-I{inc}", f"-I{inc / 'executorch/runtime/core/portable_type/c10'}",
           "-DC10_USING_CUSTOM_GENERATED_MACROS",
           "-Wl,--no-as-needed", str(p["portable"]), "-Wl,--as-needed",
           f"-Wl,-rpath,{p['portable'].parent}", f"-Wl,-rpath-link,{et.parent / 'torch' / 'lib'}",
           f"-Wl,-rpath-link,{et / 'backends' / 'qualcomm'}", "-Wl,--allow-shlib-undefined"]
    return _target(et, flags), flags


def build(et: Path | None = None, quiet: bool = True) -> Path:
    """Compile etlite.cpp (about 20 s) unless the cached build is current; -> the .so path. Raises on failure."""
    out, flags = plan(et)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run(["g++", str(SOURCE), "-o", str(tmp), *flags], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{r.stderr[-2000:]}")
    tmp.replace(out)
    return out


def library():
    """The loaded etlite library (built on first use), or None when unavailable."""
    with _LOCK:
        return _LIB[0] if _LIB else _library()


def _library():
    lib = None
    if not os.environ.get("GUARD_NO_ETLITE"):
        try:
            et = _executorch_dir()
            path = build(et)
            # etlite needs _portable_lib (the runtime, XNNPACK, portable kernels; loading it maps libtorch_cpu
            # but imports no Python torch); the quantized kernels (embedding_4bit) register into it when loaded.
            # ctypes releases the GIL while loading, so this can overlap with the tokenizer (PteRunner).
            lib = ctypes.CDLL(str(path))
            BUILT.append(path.name)
            ctypes.CDLL(str(_paths(et)["quantized"]))
            _declare(lib)
        except Exception as e:  # no compiler or headers: the caller falls back to the Python bindings
            if os.environ.get("GUARD_DEBUG"):
                print(f"guard: etlite unavailable ({e}); using executorch's Python bindings", file=sys.stderr)
            lib = None
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
    lib.etl_step.argtypes = [P, E, c.POINTER(c.c_int64), c.POINTER(c.c_int64), I, c.c_int64, c.POINTER(c.c_float), I, E, S]
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
        self._out = None

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

    def step(self, name: str, tokens: list[int], pos: list[int], last: int, width: int):
        """-> float32 numpy logits (a fresh array) of ``name``(tokens[1, T], pos[T], [last])."""
        import numpy as np

        c = ctypes
        T = len(tokens)
        tok = (c.c_int64 * T)(*tokens)
        ps = (c.c_int64 * T)(*pos)
        out = np.empty(width, dtype=np.float32)
        v = self._lib.etl_step(self._h, name.encode(), tok, ps, T, last, out.ctypes.data_as(c.POINTER(c.c_float)),
                               width, self._err, 512)
        if v < 0:
            raise RuntimeError(self._err.value.decode(errors="replace"))
        return out[:v]
