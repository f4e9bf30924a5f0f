"""etlite without libtorch: a private copy of the wheel's _portable_lib that does not load torch's libraries.

The executorch wheel's _portable_lib (the runtime etlite links against) lists libtorch_python, libtorch and
libtorch_cpu as DT_NEEDED for its pybind layer, so loading etlite mapped libtorch_cpu (~50 MiB resident) and ran its
static initialisers, though no Python torch was imported. What the runtime really takes from those libraries:
pthreadpool (XNNPACK's thread pool, from libtorch_cpu), BLAS (sgemm_ ..., libtorch_cpu), four at::Tensor / pybind
functions of the bindings, and the quantized embedding kernel (libquantized_ops_aot_lib.so, which registers itself
with torch's dispatcher and so needs libtorch). cpuinfo, the c10 symbols and a few newer libstdc++ functions come
from libc10.so (1.5 MB, no static work), which stays.

``prepare`` writes two copies into etlite's cache directory: _portable_lib without those three DT_NEEDED entries and
without libqnn_executorch_backend.so, and that QNN library (which holds ExecuTorch's core: the backend registry, the
PAL), both without SONAME and RUNPATH. etlite links both (runtime first, as the wheel orders them); libc10 is loaded
by path before (``preload``). It returns the symbols etlite must define in place of libtorch's (etlite_pool.cpp,
etlite_notorch.cpp); ``check`` verifies the built etlite defines them all. Anything unexpected (another ELF layout, a
new torch symbol in a future wheel) raises, and guard.runtime.etlite falls back to linking the wheel's _portable_lib.

Neither copy has a SONAME, so nothing else binds to them by name: executorch's Python bindings (and the quantized
kernels library they load) keep the wheel's own runtime and core, with their own backend and kernel registries;
both runtimes live in one process without sharing state, in either order (the private core copy matters when the
bindings come first: the wheel's core is then bound into the quantized library's scope, which etlite must not see).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
from contextlib import contextmanager
from pathlib import Path

DROPPED = ("libtorch_python.so", "libtorch.so", "libtorch_cpu.so")
LAYOUT = "2"  # part of the copies' cache key: bump when what prepare writes changes
QNN = "libqnn_executorch_backend.so"  # ExecuTorch's core in the wheel; etlite links a private copy
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 14, 15, 29


class ElfError(RuntimeError):
    pass


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() == "x86_64"


def _header(data: bytes) -> tuple:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ElfError("not a little-endian ELF64 file")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    return phoff, phentsize, phnum, shoff, shentsize, shnum


def _segments(data: bytes) -> list:
    phoff, phentsize, phnum, *_ = _header(data)
    return [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]


def _offset(data: bytes, vaddr: int) -> int:
    for p_type, _, off, va, _, filesz, _, _ in _segments(data):
        if p_type == 1 and va <= vaddr < va + filesz:
            return off + vaddr - va
    raise ElfError(f"address {vaddr:#x} is in no loaded segment")


def _dynamic(data: bytes) -> tuple[int, list]:
    """-> (file offset of the dynamic array, [(tag, value)] up to and without DT_NULL)."""
    dyn = [s for s in _segments(data) if s[0] == 2]
    if len(dyn) != 1:
        raise ElfError("no single PT_DYNAMIC segment")
    off, size = dyn[0][2], dyn[0][5]
    entries = []
    for i in range(size // 16):
        tag, val = struct.unpack_from("<qQ", data, off + 16 * i)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    return off, entries


def _string(data, at: int) -> str:
    return data[at:data.find(b"\0", at)].decode()


@contextmanager
def _mapped(path: Path):
    """The file read-only mapped (libtorch_cpu.so is 430 MB: read, not copied into the heap)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def needed(path: Path) -> list[str]:
    with _mapped(path) as data:
        _, entries = _dynamic(data)
        strtab = _offset(data, dict(entries)[DT_STRTAB])
        return [_string(data, strtab + v) for t, v in entries if t == DT_NEEDED]


def tags(path: Path) -> list[int]:
    """The d_tag of every dynamic entry (DT_NULL excluded)."""
    with _mapped(path) as data:
        return [t for t, _ in _dynamic(data)[1]]


def symbols(path: Path) -> tuple[set, set]:
    """-> (defined, undefined) dynamic symbol names (versions ignored)."""
    with _mapped(path) as data:
        _, _, _, shoff, shentsize, shnum = _header(data)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        defined, undefined = set(), set()
        for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
            if sh_type != 11:  # SHT_DYNSYM
                continue
            strtab = sections[link][4]
            for i in range(1, size // (entsize or 24)):
                name, info, _, shndx = struct.unpack_from("<IBBH", data, off + i * 24)
                if name and info >> 4 in (1, 2):  # global or weak
                    (defined if shndx else undefined).add(_string(data, strtab + name))
        return defined, undefined


def strip_needed(src: Path, dst: Path, drop: tuple) -> None:
    """Copy src to dst without the DT_NEEDED entries in drop, DT_SONAME and DT_RPATH/DT_RUNPATH (the later entries
    move up; the freed slots become DT_NULL), like `patchelf --remove-needed`."""
    data = bytearray(Path(src).read_bytes())
    off, entries = _dynamic(data)
    strtab = _offset(data, dict(entries)[DT_STRTAB])
    names = [_string(data, strtab + v) if t == DT_NEEDED else None for t, v in entries]
    if not set(drop) <= set(names):
        raise ElfError(f"{Path(src).name} does not list {sorted(set(drop) - set(names))}")
    keep = [(t, v) for (t, v), n in zip(entries, names)
            if n not in drop and t not in (DT_SONAME, DT_RPATH, DT_RUNPATH)]
    for i in range(len(entries) + 1):
        struct.pack_into("<qQ", data, off + 16 * i, *(keep[i] if i < len(keep) else (DT_NULL, 0)))
    tmp = Path(dst).with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        # Page-sized writes: one 12 MB write leaves the file in large page-cache folios, and faulting the mapped code
        # in then maps whole folios (the 1B run had 5.4 MiB of the copy's text resident instead of 1.9).
        for at in range(0, len(data), 4096):
            f.write(data[at:at + 4096])
    tmp.chmod(0o755)
    tmp.replace(dst)


def _loaded(name: str) -> Path | None:
    """The path of a library this process has mapped (/proc/self/maps), by file name prefix."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if Path(path).name.startswith(name):
            return Path(path)
    return None


def paths(et: Path) -> dict:
    torch_lib = et.parent / "torch" / "lib"
    return {"torch_lib": torch_lib, "c10": torch_lib / "libc10.so",
            "qnn": et / "backends" / "qualcomm" / "libqnn_executorch_backend.so"}


def prepare(portable: Path, et: Path, out: Path, core: Path) -> set:
    """Write the torch-free copy of ``portable`` to ``out`` and the core copy to ``core`` (unless present); -> the
    symbols etlite must define. Reads libtorch's symbol tables: only when etlite is (re)built."""
    if not supported():
        raise ElfError(f"only x86-64 Linux ({platform.system()} {platform.machine()})")
    p = paths(et)
    dropped = [p["torch_lib"] / n for n in DROPPED]
    if set(needed(portable)) & set(DROPPED) != set(DROPPED):
        raise ElfError(f"{portable.name} does not need {DROPPED}")
    from_torch = set()
    _, undefined = symbols(portable)
    for lib in dropped:
        from_torch |= undefined & symbols(lib)[0]
    ctypes.CDLL("libstdc++.so.6")  # and with it libgcc_s: the system libraries the copy resolves against
    system = [lib for lib in map(_loaded, ("libstdc++.so", "libgcc_s.so", "libm.so", "libc.so")) if lib]
    kept = set()
    for lib in [p["c10"], p["qnn"], *system]:
        kept |= symbols(lib)[0]
    if not core.is_file():
        strip_needed(p["qnn"], core, ())
    if not out.is_file():
        strip_needed(portable, out, (*DROPPED, QNN))
    return from_torch - kept


def check(etlite: Path, required: set) -> None:
    missing = required - symbols(etlite)[0]
    if missing:
        raise ElfError(f"etlite lacks {len(missing)} symbol(s) the runtime took from libtorch, e.g. "
                       f"{sorted(missing)[:3]}")


def preload(et: Path) -> None:
    """Load libc10 by path, so the runtime copy's DT_NEEDED libc10.so resolves to torch's (the one `import torch`
    loads too)."""
    ctypes.CDLL(str(paths(et)["c10"]))
