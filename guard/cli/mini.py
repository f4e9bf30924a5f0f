"""`guard mini build`: rebuild guard-mini (HF dir + model.pte) from the committed artefacts; `guard mini path`."""

from __future__ import annotations

HELP = "build guard-mini, the default model, from its committed artefacts (models/guard-mini/)"


def add_arguments(p) -> None:
    p.add_argument("action", choices=("build", "path"), help="build: rebuild from models/guard-mini/; path: print where it lives")
    p.add_argument("--out", help="output directory (default: the default-model location, $GUARD_HOME/guard-mini; for "
                   "other --artefacts, $GUARD_HOME/guard-mini-NAME beside it, NAME their folder's name)")
    p.add_argument("--artefacts", help="artefact directory (default: models/guard-mini in this checkout)")
    p.add_argument("--no-quant", action="store_true", help="export fp32 instead of the recipe's quantization (its quant_scheme: 8da4w for v5)")
    p.add_argument("--teacher", action="store_true", help="write guard-mini's teacher (Hugging Face dir, OUT/teacher) instead")
    p.add_argument("--force", action="store_true", help="rebuild even if model.pte exists")


def run(args) -> int:
    import time
    from pathlib import Path

    from guard.defaults import check_home, mini_dir
    from guard.errors import GuardError
    from guard.mini import ARTEFACTS, build, build_lock, is_current, sync_calibration

    art = Path(args.artefacts) if args.artefacts else ARTEFACTS
    if args.out:
        out = Path(args.out)
    else:  # checked before a minutes-long build; other artefacts never overwrite the default model (it would be rebuilt)
        check_home()
        default = art.resolve() == ARTEFACTS.resolve()
        out = mini_dir() if default else mini_dir().with_name(f"guard-mini-{art.resolve().name}")
    if out.exists() and not out.is_dir():
        raise GuardError(f"--out {out} is a file; guard-mini is built into a directory")
    if args.action == "path":
        print(out / "model.pte")
        return 0
    if args.teacher:
        from guard.mini import build_hf

        print(build_hf(out / "teacher", art, stage="teacher"))
        return 0
    with build_lock(out):  # one build at a time; a concurrent one is waited for, then found current
        if is_current(out, art) and not args.force:
            from guard.format import spec

            note = "; calibration.json updated" if sync_calibration(out, art) else ""
            if not (out / spec.FILE).is_file():  # built before the native runtime's template file existed
                spec.write(out)
                note += f"; {spec.FILE} written"
            print(f"guard-mini already built from these artefacts: {out / 'model.pte'}{note} (--force rebuilds)")
            return 0
        if (out / "model.pte").is_file() and not args.force:
            print(f"guard-mini at {out} was built from other artefacts (or before build.json existed): rebuilding")
        t0 = time.time()
        pte = build(out, art, quant=not args.no_quant)
        print(f"guard-mini: {pte} ({pte.stat().st_size / 1e6:.1f} MB) and {out / 'hf'} built in {time.time() - t0:.0f} s")
    return 0
