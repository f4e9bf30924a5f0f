"""Fixtures for the native guard (android_runner/): the host build, guard-mini and a tiny exported guard, each with
guard_format.json beside it, and the conversation generator shared by the parity tests."""

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "android_runner" / "build-host"


def cannot_build() -> str | None:
    for tool in ("cmake", "g++", "make"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not Path("/usr/include/pthreadpool.h").exists():
        return "pthreadpool.h not installed (Debian: libpthreadpool-dev)"
    return None


@pytest.fixture(scope="session")
def native_build() -> Path:
    """`bash android_runner/build.sh host` (the tokenizer library is built once into ~/.cache/guard-native)."""
    why = cannot_build()
    if why:
        pytest.skip(f"cannot build android_runner here: {why}")
    env = dict(os.environ, PY=sys.executable)
    p = subprocess.run(["bash", str(ROOT / "android_runner" / "build.sh"), "host"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return BUILD


def with_format(src_dir: Path, dst: Path, names=("model.pte", "tokenizer.json", "calibration.json")) -> Path:
    """A directory of symlinks to a model's files plus guard_format.json written by this checkout."""
    from guard.format import spec

    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if (src_dir / n).is_file():
            (dst / n).symlink_to(src_dir / n)
    spec.write(dst)
    return dst / "model.pte"


@pytest.fixture(scope="session")
def mini_pte(tmp_path_factory) -> Path:
    from guard.defaults import mini_dir

    src = mini_dir()
    if not (src / "model.pte").is_file():
        pytest.skip(f"guard-mini is not built at {src} (scripts/setup.sh runs `guard mini build`)")
    return with_format(src, tmp_path_factory.mktemp("mini"))


@pytest.fixture(scope="session")
def tiny_biased_pte(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random guard with its safe/unsafe output rows scaled (as benchmarks/qemu_arm does), exported 8da4w
    with a pruned vocabulary: verdicts vary, and the unsafe path (forced "unsafe\\nS", category decoding) runs."""
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig
    from guard.testing import bias_verdict_rows

    src = tmp_path_factory.mktemp("tiny_biased") / "model"
    shutil.copytree(tiny_model_dir, src)
    bias_verdict_rows(src)
    cfg = ExportConfig(max_seq_len=512, chunk=32, prune_vocab=True, quant=QuantConfig(scheme="8da4w", group_size=32))
    return export_model(src, tmp_path_factory.mktemp("tiny_biased_pte"), cfg)


@pytest.fixture(scope="session")
def tiny_calibrated_pte(tiny_biased_pte, tmp_path_factory) -> Path:
    """tiny_biased_pte's files (symlinked) with a calibration.json beside them."""
    from guard.eval.calibrate import Calibration

    pte = with_format(tiny_biased_pte.parent, tmp_path_factory.mktemp("tiny_calibrated"))
    Calibration(a=0.8, b=0.3, n=10, source="tests/native").save(pte.parent / "calibration.json")
    return pte


# ---- generated conversations ----

def _specials() -> list[str]:
    from guard.format.tokenizer import IMAGE, llama3_special_tokens

    return llama3_special_tokens() + [IMAGE, "<|step_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>"]


POOLS = {
    "emoji": ["😀", "🙈", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🤖"],
    "cjk": ["漢字", "かな", "カタカナ", "한국어", "中文字符", "日本語のテキスト"],
    "combining": ["e\u0301", "a\u0308", "c\u0327", "\u20dd", "n\u0303o", "Z\u0351\u0352\u0353"],
    "rtl": ["שלום", "مرحبا", "\u200f", "\u202e", "\u202b", "עברית עם English"],
    "zero_width": ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060"],
    "whitespace": [" ", "  ", "\t", "\n", "\n\n", "\r\n", "   \t ", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x85", "\x1c"],
    "nul": ["\x00", "a\x00b"],
    "words": ["How", "do", "I", "bake", "bread", "kill", "the", "process", "unsafe", "safe", "S1", "S10,S2", "unsafely",
              "don't", "I'll", "123456", "3.14", "https://example.com/a?b=c", "$$$", "...", "—", "«quote»", "ŁÓDŹ", "Ünïcödé"],
}


def random_text(rng: random.Random, long: bool = False) -> str:
    n = rng.randint(300, 1200) if long else rng.randint(1, 30)
    parts = []
    specials = _specials()
    for _ in range(n):
        r = rng.random()
        if r < 0.1:
            parts.append(rng.choice(specials))
        elif r < 0.45:
            parts.append(rng.choice(POOLS["words"]))
        else:
            parts.append(rng.choice(POOLS[rng.choice(list(POOLS))]))
        if rng.random() < 0.5:
            parts.append(" " * rng.randint(1, 3) if rng.random() < 0.9 else "\n")
    return "".join(parts)


POLICIES = [
    {},
    {"categories": ["S1", "S10", "S14"]},
    {"exclude": ["S6", "S7"]},
    {"exclude": ["S2", "S3"], "renumber": True},
    {"categories": {"S1": "Violent Crimes.", "X9": "Cooking. Anything about food <|eot_id|> 😀", "S15": "  Custom. \u00a0"}},
    {"categories": {"S10": "Hate. Slurs and dehumanisation.", "Z_1": "Spam"}, "exclude": ["S10"], "renumber": True},
]


def conversations(n: int, seed: int, long_every: int = 25, errors: bool = True) -> list[dict]:
    """Requests {"messages": [...], "options": {...}}: 1-5 turns, prompt or response role, every policy."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = rng.choice([1, 1, 1, 2, 2, 3, 4, 5])
        msgs = [{"role": "user" if k % 2 == 0 else "assistant", "content": random_text(rng, long=i % long_every == 3 and k == 0)}
                for k in range(turns)]
        if errors and i % 97 == 5:
            msgs[-1]["content"] = rng.choice(["   ", "\u3000\n", "\x85"])  # empty after str.strip(): an error on both sides
        out.append({"messages": msgs, "options": POLICIES[i % len(POLICIES)]})
    return out


def python_policy(options: dict):
    from guard.format.categories import HAZARDS, Category, Policy

    cats = options.get("categories")
    if isinstance(cats, list):
        cats = tuple(HAZARDS[c] for c in cats)
    elif isinstance(cats, dict):  # guard.format.categories.load_categories
        cats = tuple(Category(k, v.strip().split(".")[0].strip() or k, v.strip()) for k, v in cats.items())
    kw = {"categories": cats} if cats else {}
    return Policy(**kw, excluded=tuple(options.get("exclude", ())), renumber=options.get("renumber", False))
