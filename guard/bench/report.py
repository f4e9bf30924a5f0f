"""Markdown tables (pass/fail against the targets) and the latency-vs-prompt-length chart."""

from __future__ import annotations

import json
from pathlib import Path

from guard.bench.schema import TARGET_DECODE_TOK_S, TARGET_TTFT_S, describe, result_path
from guard.errors import GuardError


def read(paths) -> list[dict]:
    """Saved `guard bench` results (JSON), checked to be that."""
    docs = []
    for f in paths:
        try:
            docs.append(json.loads(Path(f).read_text()))
        except (OSError, ValueError) as e:
            raise GuardError(f"cannot read bench results {f}: {e}") from None
        if not isinstance(docs[-1], dict) or docs[-1].get("schema") != "guard-bench-1":
            raise GuardError(f"{f} is not a guard bench result (schema guard-bench-1)")
    return docs


def label(doc: dict) -> str:
    if doc.get("label"):
        return doc["label"]
    return Path(doc["model"]).parent.name if str(doc["model"]).endswith(".pte") else Path(doc["model"]).name


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3f}"


def markdown(docs: list[dict]) -> str:
    out = []
    for d in docs:
        m, v = d["machine"], d["versions"]
        out += [f"## {label(d)} ({d['backend']})", "",
                f"- model: `{d['model']}`", f"- machine: {describe(m)}, load average {m['load_avg']}",
                f"- versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x),
                f"- command: `{d['command']}`; {d['config']['runs']} runs after {d['config']['warmup']} warm-up", "",
                "| message tokens | prompt tokens | load (ms) | TTFT (s) | prefill tok/s | decode tok/s | verdict, head cached (ms) | peak RSS (MB) | decode >= 30 tok/s | TTFT <= 2.5 s |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for n, s in d["summary"].items():
            f = lambda k, scale=1.0: f"{_num(s[k]['median'] * scale)} ({_num(s[k]['p10'] * scale)}–{_num(s[k]['p90'] * scale)})"
            ok_dec = "pass" if s["decode_tok_s"]["median"] >= TARGET_DECODE_TOK_S else "FAIL"
            ok_ttft = "pass" if s["ttft_ms"]["median"] / 1e3 <= TARGET_TTFT_S else "FAIL"
            out.append(f"| {n} | {s['num_prompt_tokens']} | {f('model_load_ms')} | {f('ttft_ms', 1e-3)} | {f('prefill_tok_s')} | "
                       f"{f('decode_tok_s')} | {f('verdict_ms')} | {s['peak_rss_mb']['median']:.0f} | {ok_dec} | {ok_ttft} |")
        img = [(n, s) for n, s in d["summary"].items() if "image_encode_ms" in s]  # vision models (docs/vision.md)
        if img:
            out += ["", "Image (a 1600x1200 JPEG, 2x2 tiles), per message length: " + "; ".join(
                f"{n}: load+preprocess {_num(s['image_load_ms']['median'])} ms, encode {_num(s['image_encode_ms']['median'])} ms"
                for n, s in img) + ". TTFT excludes the image encode, which runs once per image."]
        out += ["", "Cells: median (p10–p90). TTFT is the full guard prompt on an empty cache; the verdict column is a "
                "new message with the policy head already cached, scored with the model's calibration.json if it has one (an unsafe "
                "verdict also decodes its categories).", ""]
    return "\n".join(out)


def chart(docs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4))
    panels = (("ttft_ms", 1e-3), ("decode_tok_s", 1.0), ("verdict_ms", 1.0))
    for d in docs:
        s = d["summary"]
        xs = [s[n]["num_prompt_tokens"] for n in s]
        for a, (key, scale) in zip(ax, panels):  # median, error bars p10-p90
            med = [s[n][key]["median"] * scale for n in s]
            lo = [m - s[n][key]["p10"] * scale for m, n in zip(med, s)]
            hi = [s[n][key]["p90"] * scale - m for m, n in zip(med, s)]
            a.errorbar(xs, med, yerr=[[max(v, 0) for v in lo], [max(v, 0) for v in hi]], marker="o", capsize=3, label=label(d))
    ax[0].axhline(TARGET_TTFT_S, color="red", linestyle="--", label="2.5 s target")
    ax[1].axhline(TARGET_DECODE_TOK_S, color="red", linestyle="--", label="30 tok/s target")
    ax[0].set(xlabel="prompt tokens", ylabel="time to first token (s)", title="Full prompt, empty cache")
    ax[1].set(xlabel="prompt tokens", ylabel="decode tok/s", title="Decode")
    ax[2].set(xlabel="prompt tokens", ylabel="verdict latency (ms)", title="Policy head cached")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def free_name(out: Path) -> Path:
    """``out``, or ``out-2``, ``out-3``...: the first whose .json/.md/.png do not exist yet."""
    k, cand = 1, out
    while any(result_path(cand, s).exists() for s in ("json", "md", "png")):
        k += 1
        cand = out.with_name(f"{out.name}-{k}")
    return cand


def write(docs: list[dict], out: Path, overwrite: bool = True) -> list[Path]:
    """out.json (single run only), out.md, out.png. ``overwrite=False``: never replace an earlier report (free_name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        out = free_name(out)
    paths = []
    if len(docs) == 1:
        result_path(out, "json").write_text(json.dumps(docs[0], indent=1) + "\n")
        paths.append(result_path(out, "json"))
    result_path(out, "md").write_text("# guard bench\n\n" + markdown(docs))
    chart(docs, result_path(out, "png"))
    return paths + [result_path(out, "md"), result_path(out, "png")]
