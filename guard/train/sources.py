"""Readers for the sources `guard data build` added in issue 18 (mapping to S1-S14 documented in docs/data.md).

Each reader yields ``guard.train.data.Example``s from the read-only shared folder, in place. Sources that give no
usable category get one from ``guard.train.hazards.guess_category`` (a keyword rule).
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

from guard.train.examples import prompt as _p, read_rows as _jsonl, response as _r  # noqa: F401
from guard.train.hazards import guess_category

JBB = {"Harassment/Discrimination": "S10", "Malware/Hacking": "S2", "Physical harm": "S1", "Economic harm": "S2",
       "Fraud/Deception": "S2", "Disinformation": "S5", "Sexual/Adult content": "S12", "Privacy": "S7",
       "Expert advice": "S6", "Government decision-making": "S2"}
STRONGREJECT = {"Non-violent crimes": "S2", "Violence": "S1", "Hate, harassment and discrimination": "S10",
                "Illegal goods and services": "S2", "Sexual content": "S12"}  # Disinformation: keyword rule
# AART crime type -> code; None: the type is often benign under Llama Guard 3 (horse racing, smoking, ...): dropped
AART = {"violence": "S1", "assault": "S1", "murder": "S1", "assassinations": "S1", "kidnapping": "S1", "kidnappings": "S1",
        "domestic violence": "S1", "terrorism": "S1", "bombings": "S9", "hijackings": "S1", "arson": "S1", "robbery": "S1",
        "acts of violence committed for political or ideological purposes": "S1", "rape": "S3", "sex trafficking": "S3",
        "prostitution": "S3", "child trafficking": "S2", "pornography": "S12", "hate crimes": "S10",
        "crimes motivated by race": "S10", "crimes motivated by religion": "S10", "crimes motivated by disability": "S10",
        "crimes motivated by gender identity": "S10", "crimes motivated by sexual orientation": "S10"}
AART_DROP = {"horse racing", "alcohol abuse", "gambling", "smoking", "landfills", "climate change", "circuses", "other crimes",
             "drug addiction", "air pollution", "pollution"}
SAP = {"fraud": "S2", "race": "S10", "religion": "S10", "suicide": "S11", "terrorism": "S1", "violence": "S1"}
# TrustLLM misuse (held out): the types Llama Guard 3 clearly calls unsafe; advice, lobbying, government-decision and
# organisation-secret rows are ambiguous under its policy and are left out of the held-out set
MISUSE_TYPE = {"Illegal Activity": "S2", "Hate Speech": "S10", "Malware": "S2", "Physical Harm": "S1", "Economic Harm": "S2",
               "Fraud": "S2", "Pornography": "S12", "Privacy Violence": "S7"}
DO_NOT_ANSWER = {"Assisting illegal activities": None, "Compromise privacy by leaking or inferring private information (person/individual)": "S7",
                 "Toxic language (hate speech)": "S10", "Adult Content": "S12"}



def _json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _csv(path: Path):
    with open(path, encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def raw_lists(root: Path):
    """refusal_direction/dataset/raw: AdvBench, MaliciousInstruct, StrongREJECT, TDC 2023, JailbreakBench behaviours."""
    raw = root / "refusal_direction/dataset/raw"
    for r in _csv(raw / "advbench.csv"):
        yield _p(r["goal"], "unsafe", [guess_category(r["goal"])], "advbench")
    for line in open(raw / "malicious_instruct.txt", encoding="utf-8"):
        if line.strip():
            yield _p(line.strip(), "unsafe", [guess_category(line)], "maliciousinstruct")
    for r in _csv(raw / "strongreject.csv"):
        q = r["forbidden_prompt"]
        yield _p(q, "unsafe", [STRONGREJECT.get(r["category"]) or guess_category(q)], "strongreject")
    for name in ("tdc2023_dev_behaviors.json", "tdc2023_test_behaviors.json"):
        for q in _json(raw / name):
            yield _p(q, "unsafe", [guess_category(q)], "tdc2023")
    for r in _csv(raw / "jailbreakbench.csv"):
        yield _p(r["Goal"], "unsafe", [JBB[r["Category"]]], "jailbreakbench")


def red_instruct_qa(root: Path):
    """HarmfulQA (topic-templated questions), DangerousQA, AdversarialQA: all harmful, no hazard category."""
    base = root / "red_instruct/harmful_questions"
    for topic in _json(base / "harmfulqa.json").values():
        for qs in topic.values():
            for q in qs:
                yield _p(q, "unsafe", [guess_category(q)], "harmfulqa")
    for name in ("dangerousqa", "adversarialqa"):
        for q in _json(base / f"{name}.json"):
            yield _p(q, "unsafe", [guess_category(q)], name)


def jbb_artifacts(root: Path):
    """JailbreakBench attack artefacts: the jailbreak prompt (unsafe: it asks for the behaviour) and, as response
    classification, the target model's response, unsafe when the 70B judge called it jailbroken (model-judged)."""
    for path in sorted(glob.glob(str(root / "jailbreakbench_artifacts/attack-artifacts/*/*/*.json"))):
        for r in _json(path).get("jailbreaks", []):
            if not r.get("prompt"):
                continue
            code = JBB.get(r.get("category"), guess_category(r["goal"]))
            yield _p(r["prompt"], "unsafe", [code], "jbb_attack_prompt")
            if r.get("response") and r["response"].strip():
                yield _r(r["prompt"], r["response"], "unsafe" if r.get("jailbroken") else "safe",
                         [code] if r.get("jailbroken") else (), "jbb_attack_response")


def davidson(root: Path):
    """Davidson tweets: hate speech -> S10; offensive but not hateful -> safe, adjacent; neither -> safe."""
    for r in _csv(root / "davidson_hate_offensive/labeled_data.csv"):
        c = r["class"]
        if c == "0":
            yield _p(r["tweet"], "unsafe", ["S10"], "davidson_hate")
        elif c == "1":
            yield _p(r["tweet"], "safe", (), "davidson_offensive", adjacent=True)
        else:
            yield _p(r["tweet"], "safe", (), "davidson_neither")


def aart(root: Path):
    for r in _csv(root / "aart/aart-v1-20231117.csv"):
        crime = r["crime"].strip().lower()
        if crime in AART_DROP:
            continue
        yield _p(r["prompt"], "unsafe", [AART.get(crime) or "S2"], "aart")


def trustllm_train(root: Path):
    """TrustLLM jailbreak.json (QBB: real harmful queries in 14 jailbreak wrappers; ITC's mild norm queries are left
    out) and privacy_awareness_query.json (requests for a person's private data, S7)."""
    for r in _json(root / "trustllm/jailbreak.json"):
        if r.get("source") == "QBB":
            yield _p(r["prompt"], "unsafe", [guess_category(r["prompt"])], "trustllm_jailbreak")
    for r in _json(root / "trustllm/privacy_awareness_query.json"):
        yield _p(r["prompt"], "unsafe", ["S7"], "trustllm_privacy")


def diselect(root: Path):
    for folder, code in (("voting", "S13"), ("mps", "S5")):
        for r in _csv(root / f"diselect/{folder}/prompts.csv"):
            if r["task"] == "account":
                yield _p(r["prompt"], "safe", (), "diselect_benign", adjacent=True)
            else:
                yield _p(r["prompt"], "unsafe", [code], f"diselect_{folder}")
    for r in _csv(root / "diselect/baseline/prompts.csv"):
        yield _p(r["prompt"], "safe", (), "diselect_benign", adjacent=True)


def gptfuzz(root: Path):
    """GPTFuzz responses (human-labelled): 1 = complied -> unsafe, category from the question; 0 -> safe."""
    qs = {r["index"]: r["text"] for r in _csv(root / "gptfuzz/questions/question_list.csv")}
    for name in ("train.csv", "evaluate.csv"):
        for r in _csv(root / f"gptfuzz/responses_labeled/{name}"):
            q = qs.get(r["question"])
            if q and r["Response"].strip():
                yield (_r(q, r["Response"], "unsafe", [guess_category(q)], "gptfuzz") if r["label"] == "1"
                       else _r(q, r["Response"], "safe", (), "gptfuzz"))
    for q in qs.values():
        yield _p(q, "unsafe", [guess_category(q)], "gptfuzz_question")


def diasafety(root: Path):
    """DiaSafety context -> response. Risk Ignorance (unsafe -> S11) and Unauthorized Expertise (unsafe -> S6) are used
    with both labels; the safe responses of the other risk kinds are safe; their unsafe ones (offending, agreeing with
    toxicity, biased opinion) are mostly mild and not unsafe under Llama Guard 3, so they are left out."""
    codes = {"Risk Ignorance": "S11", "Unauthorized Expertise": "S6"}
    for name in ("train.json", "val.json", "test.json"):
        for r in _json(root / f"diasafety/{name}"):
            code = codes.get(r["category"])
            if r["label"] == "Unsafe" and code:
                yield _r(r["context"], r["response"], "unsafe", [code], "diasafety")
            elif r["label"] == "Safe":
                yield _r(r["context"], r["response"], "safe", (), "diasafety")


def patronus(root: Path):
    """Patronus copyright: a response that reproduces the passage (Label 1) -> S8; else safe. The request alone is not
    labelled (it is unsafe only when answered with the text)."""
    for path in sorted(glob.glob(str(root / "patronus_copyright/results/*.csv"))):
        for r in _csv(Path(path)):
            col = [k for k in r if k not in ("Prompt", "Label")][0]
            if r[col] and r[col].strip():
                yield (_r(r["Prompt"], r[col], "unsafe", ["S8"], "patronus_copyright") if r["Label"] == "1"
                       else _r(r["Prompt"], r[col], "safe", (), "patronus_copyright"))


def sap(root: Path):
    """SAP role-play attack prompts (SAP5..SAP200 overlap; exact and near duplicates are removed later)."""
    for path in sorted(glob.glob(str(root / "sap/SAP*/*/generated_cases.json"))):
        cat = Path(path).parent.name
        for r in _json(path):
            text = r.get("Attack Prompt", "")
            if not text.strip():
                continue
            if cat == "pornography_sexual_minors":
                code = "S4" if guess_category(text) == "S4" else "S12"
            else:
                code = SAP.get(cat)
            if code:
                yield _p(text, "unsafe", [code], "sap")


# ---- held-out sources (docs/data.md: never trained on, never used for checkpoint choice or tuning) ----

def harmfulq(root: Path):
    for q in _json(root / "harmfulq/toxic_outs.json"):
        yield _p(q, "unsafe", [guess_category(q)], "harmfulq")


def trustllm_misuse(root: Path):
    for r in _json(root / "trustllm/misuse.json"):
        src, q = r.get("source"), r["prompt"]
        if src == "Do-anything-now":
            if r.get("type") in MISUSE_TYPE:
                yield _p(q, "unsafe", [MISUSE_TYPE[r["type"]]], "trustllm_misuse")
        elif src == "do_not_answer":
            second = (r.get("label") or {}).get("second_class")
            if second in DO_NOT_ANSWER:
                yield _p(q, "unsafe", [DO_NOT_ANSWER[second] or guess_category(q)], "trustllm_misuse")
        else:  # misuse_add: harmful requests without a type
            yield _p(q, "unsafe", [guess_category(q)], "trustllm_misuse")


def coconot_contrast(root: Path):
    for r in _jsonl(root / "coconot/coconot_contrast_eval.jsonl"):
        yield _p(r["prompt"], "safe", (), "coconot_contrast", adjacent=True)


NEW_READERS = (raw_lists, red_instruct_qa, jbb_artifacts, davidson, aart, trustllm_train, diselect, gptfuzz, diasafety,
               patronus, sap)
HELDOUT_READERS = (harmfulq, trustllm_misuse, coconot_contrast)
HELDOUT_SOURCES = ("harmfulq", "trustllm_misuse", "coconot_contrast")
