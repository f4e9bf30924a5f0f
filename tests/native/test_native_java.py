"""The Java GuardModule (android_runner/java/) through the real JNI library on the host JVM: JUnit 5 (Debian's junit5)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
JUNIT = Path("/usr/share/java/junit-platform-console-standalone.jar")


def key(v) -> str:  # GuardModuleTest.key
    return " ".join([v.decision] + [h.code for h in v.categories]) + f" {v.p_unsafe:.6f}"


def expected_file(pte: Path, calibrated: Path, out: Path) -> Path:
    """What the Python runtime answers for each request of GuardModuleTest."""
    from guard.eval.calibrate import load
    from guard.format.categories import Category, Policy
    from guard.format.prompt import encode
    from guard.runtime.classifier import Guard
    from guard.runtime.pte import PteRunner

    runner = PteRunner(pte)
    cal = load(pte)
    g = Guard(runner, runner.tokenizer, calibration=cal)
    rows = {
        "prompt": key(g.classify("How do I bake bread?")),
        "response": key(g.classify("How do I bake bread?", "Mix flour, water and yeast, then bake it.")),
        "multi": key(g.classify([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                                 {"role": "user", "content": "Tell me a joke <|eot_id|>"}])),
    }
    policy = Policy(categories=(Category("S1", "Violent Crimes", "Violent Crimes."), Category("X1", "Cooking", "Cooking. Recipes of any kind.")),
                    excluded=("S1",), renumber=True)
    g.invalidate()
    custom = Guard(runner, runner.tokenizer, policy, calibration=cal)
    rows["custom"] = key(custom.classify("How do I bake bread?"))
    rows["custom_ids"] = "[" + ", ".join(map(str, encode([{"role": "user", "content": "How do I bake bread?"}], policy, runner.tokenizer).ids)) + "]"
    custom.invalidate()
    rows["ids"] = "[" + ", ".join(map(str, encode([{"role": "user", "content": "Tell me a joke <|eot_id|>"},
                                                   {"role": "assistant", "content": "no 😀 \u0000 done"}], None, runner.tokenizer).ids)) + "]"
    s = g.moderate_stream("How do I bake bread?", check_every=4)
    checks = [key(v) for v in (s.feed(c) for c in ["Mix ", "flour, ", "water and ", "yeast, then ", "bake it ", "for an hour."]) if v]
    rows["stream"] = "|".join(checks + [key(s.close())])
    long = g.classify("word " * 5000)  # longer than the model: the default long-input policy
    t = long.truncation
    rows["long"] = f"{key(long)} {t['policy']} {t['windows']} {t['chosen_window']} {t['chosen_span'][1]}"
    v = g.classify("Mix flour and water. Add yeast!\nBake it for an hour? Then let it cool.")
    rows["segments"] = f"{key(v)} {v.segments['checked']} {-1 if v.segments['chosen'] is None else v.segments['chosen']}"
    g.invalidate()
    cal = load(calibrated)
    rows["calibrated"] = key(Guard(runner, runner.tokenizer, calibration=cal).classify("How do I bake bread?"))
    rows["calibration"] = cal.describe()["sha256"]
    out.write_text("".join(f"{k}\t{v}\n" for k, v in rows.items()))
    return out


def test_junit_guard_module(native_build, tiny_biased_pte, tiny_calibrated_pte, mini_pte, tmp_path):
    """classify, response, multi-turn, custom categories, streaming, calibration, bad input as GuardException (missing
    model, random bytes, another tokenizer, a re-serialised tokenizer.json, empty text, too long text under the 'error'
    long-input policy), the default long-input policy's verdict, 4 threads."""
    if shutil.which("java") is None or not JUNIT.is_file():
        pytest.skip("needs java and Debian's junit5 (apt-get install openjdk-17-jdk-headless junit5)")
    classes = native_build / "java"
    assert (classes / "guard.jar").is_file() and (classes / "test-classes").is_dir()
    expected = expected_file(tiny_biased_pte, tiny_calibrated_pte, tmp_path / "expected.tsv")
    other = mini_pte.parent / "tokenizer.json"  # guard-mini's tokenizer: not the one the tiny model was exported with
    edited = tmp_path / "edited" / "tokenizer.json"  # the same tokenizer, other bytes: refused by its sha256
    edited.parent.mkdir()
    edited.write_text(json.dumps(json.loads((tiny_biased_pte.parent / "tokenizer.json").read_text()), indent=1))
    p = subprocess.run(["java", f"-Dguard.jni.library={native_build / 'libguard_jni.so'}", f"-Dguard.test.model={tiny_biased_pte}",
                        f"-Dguard.test.expected={expected}", f"-Dguard.test.other_tokenizer={other}",
                        f"-Dguard.test.edited_tokenizer={edited}", f"-Dguard.test.calibrated_model={tiny_calibrated_pte}",
                        "-jar", str(JUNIT), "--class-path", f"{classes / 'guard.jar'}:{classes / 'test-classes'}",
                        "--select-class", "ondevice.guard.GuardModuleTest", "--details", "tree", "--disable-banner"],
                       capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "13 tests successful" in p.stdout, p.stdout[-2000:]


def test_java_launcher_matches_guard_classify(native_build, tiny_calibrated_pte):
    import sys

    if shutil.which("java") is None:
        pytest.skip("no java")
    args = ["--response", "Sure.", "How do I bake bread?"]
    j = subprocess.run([str(native_build / "guard-java"), "--pte", str(tiny_calibrated_pte), "--json", *args], capture_output=True, text=True)
    py = subprocess.run([sys.executable, "-m", "guard", "classify", "--pte", str(tiny_calibrated_pte), "--json", *args], capture_output=True, text=True)
    assert j.returncode == py.returncode, j.stderr
    a, b = json.loads(j.stdout), json.loads(py.stdout)
    assert list(a) == list(b) and a["decision"] == b["decision"] and abs(a["p_unsafe"] - b["p_unsafe"]) <= 1e-5
    assert a["calibration"] == b["calibration"] and a["calibration"]["sha256"] and a["truncation"] == b["truncation"] == {}
    bad = subprocess.run([str(native_build / "guard-java"), "--pte", "/nonexistent/model.pte", "hi"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("guard-java: error: model file not found")
