"""Empty stand-ins for the CUDA libraries that PyPI's aarch64 torch 2.13.0 wheel links against.

PyPI's only torch 2.13.0 aarch64 wheel is a CUDA build: libtorch_cpu.so alone needs libcudart.so.13 and
libcupti.so.13, and some of the nvidia-*-cu13 wheels it pins have no aarch64 build on PyPI. executorch's
_portable_lib.so links libtorch, so nothing loads without them. No CUDA code runs in this check (CPU, XNNPACK):
each stub library only has the SONAME, the symbol-version node and the symbols the torch libraries import from
it; every function returns cudaErrorNoDevice (100) or, for *ErrorString-style calls, a constant string.

    python cuda_stubs.py SITE_PACKAGES SYSROOT OUT_DIR     # needs aarch64-linux-gnu-gcc and readelf
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


def dyn_syms(lib: Path) -> list[tuple[str, str, str]]:
    """(name, version or '', 'UND' or 'DEF') for global/weak dynamic symbols."""
    out = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], capture_output=True, text=True).stdout
    rows = []
    for ln in out.splitlines():
        f = ln.split()
        if len(f) < 8 or not f[0].rstrip(":").isdigit() or f[4] not in ("GLOBAL", "WEAK"):
            continue
        name, _, ver = f[7].partition("@")
        rows.append((name, ver.lstrip("@").split(" ")[0], "UND" if f[6] == "UND" else "DEF", f[4]))
    return rows


def version_files(lib: Path) -> dict[str, str]:
    """Symbol-version name -> the library file that must define it (readelf -V, "Version needs")."""
    out = subprocess.run(["readelf", "-V", "-W", str(lib)], capture_output=True, text=True).stdout
    files, current = {}, None
    for ln in out.split("Version needs", 1)[-1].splitlines():
        if m := re.search(r"File: (\S+)", ln):
            current = m.group(1)
        elif (m := re.search(r"Name: (\S+)", ln)) and current:
            files[m.group(1)] = current
    return files


def needed(lib: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\).*\[(.+)\]", out)


def main(site: str, sysroot: str, out_dir: str) -> int:
    site, sysroot, out = Path(site), Path(sysroot), Path(out_dir)
    libs = [p for p in (site / "torch").rglob("*.so*") if p.is_file()] + list((site / "executorch").rglob("*.so"))
    present = {p.name for p in libs}
    system = [p for d in ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu") for p in (sysroot / d).glob("*.so*")]
    present |= {p.name for p in system}
    missing = sorted({n for p in libs for n in needed(p)} - present)
    other = [n for n in missing if not re.match(r"lib(cu|nv|nccl)", n)]
    if other:  # a system library: install it in the sysroot instead of faking it
        sys.exit(f"missing non-CUDA libraries in {sysroot}: {', '.join(other)} (apt-get install them in the chroot)")
    defined, wanted, vfile = set(), defaultdict(set), {}
    for p in libs:
        vfile.update(version_files(p))
    for p in libs + [p for p in system if p.is_file()]:
        for name, ver, kind, bind in dyn_syms(p):
            if kind == "DEF":
                defined.add(name)
            elif p in libs and bind == "GLOBAL":
                wanted[ver].add(name)
    out.mkdir(parents=True, exist_ok=True)
    # Unversioned imports that nothing defines: CUDA driver/NCCL/cuSPARSELt calls (Python's own API comes from the
    # python executable and is left alone). They go into the first stub; any library in the global scope will do.
    unversioned = sorted(n for n in wanted[""] if n not in defined and not re.match(r"_?Py", n))
    for lib in missing:
        versions = sorted(v for v, f in vfile.items() if f == lib)
        syms = sorted({n for v in versions for n in wanted.get(v, ())}) + (unversioned if lib == missing[0] else [])
        c = ['static const char kStub[] = "CUDA stub: no GPU in this check";']
        for i, s in enumerate(syms):
            if re.search(r"Error(String|Name)|Status(String|Name)|GetErrorString", s):
                c.append(f'const char* f{i}(void) __asm__("{s}"); const char* f{i}(void) {{ return kStub; }}')
            else:
                c.append(f'long f{i}(void) __asm__("{s}"); long f{i}(void) {{ return 100; }}')
        (out / f"{lib}.c").write_text("\n".join(c) + "\n")
        args = ["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-O0", "-o", str(out / lib), str(out / f"{lib}.c"), f"-Wl,-soname,{lib}"]
        if versions:  # versioned imports need their version nodes
            nodes, seen = [], set()
            for i, v in enumerate(versions):
                names = sorted(set(wanted.get(v, ())) - seen) + (sorted(set(syms) - {n for x in versions for n in wanted.get(x, ())}) if i == 0 else [])
                seen |= set(names)
                nodes.append(f"{v} {{ global: {' '.join(n + ';' for n in names)} }};\n")
            (out / f"{lib}.map").write_text("".join(nodes))
            args.append(f"-Wl,--version-script={out / f'{lib}.map'}")
        subprocess.run(args, check=True)
        print(f"{lib}: {len(syms)} symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
