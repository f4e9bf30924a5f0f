"""Score calibration: Platt scaling of the verdict margin, fitted on labelled data, stored beside the model.

A guard's raw score is the two-way softmax of the first verdict token, ``sigmoid(m)`` with the margin
``m = logit(unsafe) - logit(safe)``. A compressed model keeps the ranking (AUPRC) far better than the scale:
guard-mini's raw scores sit mostly below 0.5 even for unsafe text. Calibration refits the scale,

    p_unsafe = sigmoid(a * m + b),

by maximum likelihood on held-out labelled records (a dev split, never the test split), so that ``p_unsafe`` is
again a probability and the default threshold 0.5 is the accuracy-optimal decision on that data.

``calibration.json`` lives beside a ``.pte`` (like ``tokenizer.json``) or inside a Hugging Face directory; loaders
pick it up unless told not to (``guard classify --uncalibrated``, ``guard.load(..., calibrated=False)``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from guard.errors import GuardError

CALIBRATION_FILE = "calibration.json"
MAX_A, MAX_B = 20.0, 20.0  # a usable calibration: 0 < a <= MAX_A, |b| <= MAX_B (fits on real guards: a ~0.5-3, |b| < 5)


@dataclass(frozen=True)
class Calibration:
    a: float = 1.0  # scale on the margin; 1, 0 is the identity (the model's own softmax)
    b: float = 0.0
    n: int = 0  # records it was fitted on
    source: str = ""  # what data, which model, which command
    sha256: str = ""  # of the file it was read from ("" when fitted in memory)

    def describe(self) -> dict:
        """What a verdict records about the calibration that scored it."""
        return {"a": self.a, "b": self.b, "sha256": self.sha256[:16]}

    def p_unsafe(self, margin: float) -> float:
        z = self.a * margin + self.b
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        d = asdict(self)
        d.pop("sha256")
        path.write_text(json.dumps(d, indent=2) + "\n")
        return path


def path_for(model: str | Path) -> Path:
    """Where a model's calibration file lives: inside a directory, beside a file."""
    p = Path(model)
    return p / CALIBRATION_FILE if p.is_dir() else p.parent / CALIBRATION_FILE


def load(model: str | Path) -> Calibration | None:
    """The calibration stored with ``model``, or None. A malformed file is an error, never silently ignored."""
    path = path_for(model)
    if not path.is_file():
        return None
    import hashlib

    try:
        raw = path.read_bytes()
        d = json.loads(raw)
        cal = Calibration(a=float(d["a"]), b=float(d["b"]), n=int(d.get("n", 0)), source=str(d.get("source", "")),
                          sha256=hashlib.sha256(raw).hexdigest())
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as e:
        raise GuardError(f"{path} is not a valid calibration file ({type(e).__name__}: {e}); delete it or refit with "
                         "`guard calibrate`") from None
    if not (math.isfinite(cal.a) and math.isfinite(cal.b)) or not 0 < cal.a <= MAX_A or abs(cal.b) > MAX_B:
        raise GuardError(f"{path} has an unusable calibration (a={cal.a:.6g}, b={cal.b:.6g}); a must be in (0, {MAX_A:g}] "
                         f"and |b| at most {MAX_B:g}: such values would force every verdict one way")
    return cal


def _nll(a: float, b: float, margins, labels, l2: float) -> float:
    loss = 0.0
    for m, y in zip(margins, labels):
        z = a * m + b
        loss += math.log1p(math.exp(-abs(z))) + max(-z, 0.0) if y else math.log1p(math.exp(-abs(z))) + max(z, 0.0)
    return loss + 0.5 * l2 * ((a - 1.0) ** 2 + b * b)


def fit(margins: list[float], labels: list[bool], l2: float = 1e-3, iters: int = 100) -> tuple[float, float]:
    """Logistic regression of ``labels`` on ``margins``: Newton's method with backtracking (plain Newton overshoots
    from a saturated start); a small ridge toward the identity keeps it finite when the classes are separable.
    Returns (a, b)."""
    if len(margins) != len(labels) or not margins:
        raise GuardError("calibration needs margins and labels of the same, non-zero length")
    if all(labels) or not any(labels):
        raise GuardError("calibration data needs both safe and unsafe records")
    a, b = 1.0, 0.0
    loss = _nll(a, b, margins, labels, l2)
    for _ in range(iters):
        ga, gb = l2 * (a - 1.0), l2 * b
        haa, hab, hbb = l2, 0.0, l2
        for m, y in zip(margins, labels):
            z = a * m + b
            p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
            r, w = p - (1.0 if y else 0.0), p * (1 - p)
            ga, gb = ga + r * m, gb + r
            haa, hab, hbb = haa + w * m * m, hab + w * m, hbb + w
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        t = 1.0
        while t > 1e-6:
            new = _nll(a - t * da, b - t * db, margins, labels, l2)
            if new <= loss:
                break
            t /= 2
        else:
            break  # no descent left: converged to numerical precision
        a, b, step = a - t * da, b - t * db, t * (abs(da) + abs(db))
        converged = loss - new < 1e-12 * max(1.0, abs(loss)) or step < 1e-10
        loss = new
        if converged:
            break
    if a <= 0:
        raise GuardError(f"calibration found a non-positive slope ({a:.3g}): the model's score does not rank this "
                         "data; calibration cannot fix that")
    if not (0 < a <= MAX_A and abs(b) <= MAX_B):
        raise GuardError(f"calibration found a={a:.3g}, b={b:.3g}, outside 0 < a <= {MAX_A:g}, |b| <= {MAX_B:g}: the "
                         "data cannot calibrate this model (too few records, or separable by the margin alone)")
    return a, b


def log_loss(probs: list[float], labels: list[bool]) -> float:
    eps = 1e-12
    return -sum(math.log(max(p if y else 1 - p, eps)) for p, y in zip(probs, labels)) / len(labels)


def ece(probs: list[float], labels: list[bool], bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    total, err = len(probs), 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (k == bins - 1 and p == 1.0)]
        if idx:
            conf = sum(probs[i] for i in idx) / len(idx)
            acc = sum(labels[i] for i in idx) / len(idx)
            err += len(idx) / total * abs(conf - acc)
    return err


def calibrate(guard, records: list[dict], source: str = "", progress: bool = False) -> tuple[Calibration, dict]:
    """Fit a guard's calibration on labelled records ({"messages", "label"}); -> (calibration, before/after report).

    Fitted on the raw margin (``Verdict.margin``), so a calibration the guard already has does not matter; each
    record is judged whole (no segment checks: a calibration maps one judgement's margin to a probability)."""
    from guard.eval.evaluate import metrics, predict

    margins = [p["margin"] for p in predict(guard, records, progress=progress, segments=False)]
    labels = [r["label"] == "unsafe" for r in records]
    a, b = fit(margins, labels)
    cal = Calibration(a=a, b=b, n=len(records), source=source)
    report = {}
    for name, c in (("raw", Calibration()), ("calibrated", cal)):
        probs = [c.p_unsafe(m) for m in margins]
        m = metrics(records, [{"unsafe": p >= 0.5, "p_unsafe": p} for p in probs])
        report[name] = {"log_loss": log_loss(probs, labels), "ece": ece(probs, labels),
                        "f1_at_0.5": m["f1"], "precision": m["precision"], "recall": m["recall"]}
    return cal, report
