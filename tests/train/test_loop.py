import json

import pytest
import torch

from guard.format.categories import Policy
from guard.errors import GuardError
from guard.format.prompt import encode
from guard.train.loop import GuardCodec, TrainConfig, finetune, lr_at, make_example, verdict_loss, _head_cache

RECORDS = [
    {"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}], "label": "unsafe", "categories": ["S9"]},
    {"messages": [{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "Mix flour."}],
     "label": "safe", "categories": []},
]


@pytest.fixture()
def model_and_codec(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), GuardCodec(AutoTokenizer.from_pretrained(tiny_model_dir))


def test_codec_matches_the_llama_guard_prompt(model_and_codec, tokenizer):
    _, codec = model_and_codec
    for rec in RECORDS:
        head, body, target = make_example(codec, rec, Policy())
        want = encode(rec["messages"], Policy(), tokenizer)
        assert head == want.head and body == want.body + [tokenizer.tokens.blank]
    t = tokenizer.tokens
    assert make_example(codec, RECORDS[1], Policy())[2] == [t.safe, t.eot]
    assert make_example(codec, RECORDS[0], Policy())[2] == [t.unsafe] + tokenizer.encode("\nS9") + [t.eot]


def _loss(model, codec, rec):
    head, body, target = make_example(codec, rec, Policy())
    with torch.no_grad():
        return verdict_loss(model, _head_cache(model, head), body, target, len(head))[0].item()


@pytest.mark.slow
def test_finetune_learns_and_resumes(model_and_codec, tmp_path):
    model, codec = model_and_codec
    before = [_loss(model, codec, r) for r in RECORDS]
    cfg = TrainConfig(steps=3, lr=1e-2, accum=2, save_every=1, bf16=False)
    attn = model.config._attn_implementation
    assert attn == "sdpa"  # the setting training swaps out
    assert finetune(model, codec, RECORDS, tmp_path, cfg, progress=False)["steps"] == 3
    assert model.config._attn_implementation == attn  # trained with eager attention, the model's own setting back
    finetune(model, codec, RECORDS, tmp_path, TrainConfig(steps=6, lr=1e-2, accum=2, save_every=1, bf16=False), progress=False)
    after = [_loss(model, codec, r) for r in RECORDS]
    assert sum(after) < 0.9 * sum(before), (before, after)  # it learns (the bar is loose: a tiny random model, 6 steps)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6], "the second run did not resume from step 3"
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 6


@pytest.mark.slow
def test_lr_schedule_decays_linearly_and_is_used(model_and_codec, tmp_path):
    cfg = TrainConfig(steps=4, lr=1e-2, accum=1, save_every=1, bf16=False, decay_from=2)
    assert [lr_at(cfg, s) for s in range(4)] == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3])
    assert lr_at(TrainConfig(steps=4, lr=1e-2), 3) == 1e-2  # no decay_from: constant
    for bad in (4, -1):  # outside the run: a silent no-op or a rate above lr, refused by the config itself
        with pytest.raises(GuardError, match="decay-from"):
            TrainConfig(steps=4, decay_from=bad)
    model, codec = model_and_codec
    finetune(model, codec, RECORDS, tmp_path, cfg, progress=False)
    logged = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3])
    opt = torch.load(tmp_path / "ckpt.pt", weights_only=False)["opt"]
    assert opt["param_groups"][0]["lr"] == pytest.approx(5e-3), "the optimizer did not take the scheduled rate"


def test_cached_head_matches_full_forward(model_and_codec):
    model, codec = model_and_codec
    head, body, target = make_example(codec, RECORDS[0], Policy())
    with torch.no_grad():
        full = model(input_ids=torch.tensor([head + body + target[:-1]])).logits[0, len(head) + len(body) - 1:]
        _, part = verdict_loss(model, _head_cache(model, head), body, target, len(head))
    assert torch.allclose(full, part, atol=1e-4), (full - part).abs().max()


def test_category_weight_scales_only_the_hazard_code_tokens(model_and_codec):
    model, codec = model_and_codec
    head, body, target = make_example(codec, RECORDS[0], Policy())  # unsafe: 'unsafe', '\n', 'S', '9', eot
    with torch.no_grad():
        loss1, logits = verdict_loss(model, _head_cache(model, head), body, target, len(head))
        loss4, _ = verdict_loss(model, _head_cache(model, head), body, target, len(head), category_weight=4.0)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="none")
    assert loss1.item() == pytest.approx((ce[0] + ce[1:].mean()).item(), rel=1e-5)
    assert loss4.item() == pytest.approx((ce[0] + 4 * ce[1:].mean()).item(), rel=1e-5)
    head, body, target = make_example(codec, RECORDS[1], Policy())  # safe: 'safe', eot; the decision token unscaled
    with torch.no_grad():
        a = verdict_loss(model, _head_cache(model, head), body, target, len(head))[0].item()
        b = verdict_loss(model, _head_cache(model, head), body, target, len(head), category_weight=4.0)[0].item()
    assert b > a  # the end of turn after 'safe' is scaled too


def test_empty_dataset_is_refused(model_and_codec, tmp_path):
    model, codec = model_and_codec
    with pytest.raises(GuardError, match="empty dataset"):
        finetune(model, codec, [], tmp_path / "o", TrainConfig(steps=1), progress=False)
    assert not (tmp_path / "o").exists()


DDP_SCRIPT = """
import hashlib, json, sys, os, torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer
from guard.train.loop import GuardCodec, TrainConfig, finetune
model_dir, out, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained(model_dir)
finetune(m, GuardCodec(AutoTokenizer.from_pretrained(model_dir)), rows, out, TrainConfig(steps=2, lr=1e-2, accum=1, save_every=1, bf16=False), progress=False)
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()
open(os.path.join(out, f"rank{dist.get_rank()}.txt"), "w").write(h)
"""


@pytest.mark.slow
def test_torchrun_two_process_gloo(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533", str(script),
           str(tiny_model_dir), str(tmp_path / "out"), json.dumps(RECORDS)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    h0, h1 = (tmp_path / "out" / "rank0.txt").read_text(), (tmp_path / "out" / "rank1.txt").read_text()
    assert h0 == h1, "ranks diverged: gradients were not averaged"
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=False)["step"] == 2


def test_decision_token_weighs_as_much_as_the_rest(model_and_codec):
    """The safe/unsafe token gets weight 1 whatever the verdict's length (a plain mean under-weighs it for unsafe)."""
    import torch.nn.functional as F

    model, codec = model_and_codec
    head, body, target = make_example(codec, RECORDS[0], Policy())
    assert len(target) > 3  # unsafe \n S 9 <eot>
    with torch.no_grad():
        loss, logits = verdict_loss(model, _head_cache(model, head), body, target, len(head))
        ce = F.cross_entropy(logits, torch.tensor(target), reduction="none")
    assert torch.allclose(loss, ce[0] + ce[1:].mean())
    assert not torch.allclose(loss, ce.mean())


STOP_SCRIPT = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from guard.errors import GuardError
from guard.train.loop import GuardCodec, TrainConfig, finetune
model_dir, out, rows, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained(model_dir)
try:
    s = finetune(m, GuardCodec(AutoTokenizer.from_pretrained(model_dir)), rows, out,
                 TrainConfig(steps=steps, lr=1e-3, accum=1, save_every=3, bf16=False), progress=False)
except GuardError as e:
    sys.exit(str(e))
print("done", s["steps"])
"""


@pytest.mark.slow
def test_sigterm_saves_the_step_it_stopped_at_and_the_run_resumes_from_it(tiny_model_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ck"
    args = [sys.executable, "-c", STOP_SCRIPT, str(tiny_model_dir), str(out), json.dumps(RECORDS)]
    proc = subprocess.Popen(args + ["100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "log.jsonl").is_file() and time.time() < deadline:  # step 3 saved: inside the loop
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "stopped by signal 15 at step" in err and "Traceback" not in err, err
    stopped = torch.load(out / "ckpt.pt", weights_only=False)["step"]
    assert f"at step {stopped} of 100000;" in err  # the checkpoint is the step it stopped at, not the last multiple of 3
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()][-1] == stopped >= 3
    done = subprocess.run(args + [str(stopped + 2)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == f"done {stopped + 2}", done.stderr
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged[-1] == stopped + 2 and len(set(logged)) == len(logged)  # resumed, no step trained twice


def test_a_checkpoint_that_cannot_be_resumed_is_a_one_line_error(model_and_codec, tmp_path):
    model, codec = model_and_codec
    cfg = TrainConfig(steps=1, lr=1e-2, accum=1, save_every=1, bf16=False)
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04 truncated")  # a killed copy, not our atomic write
    with pytest.raises(GuardError, match="cannot resume from .*ckpt.pt.*move it away"):
        finetune(model, codec, RECORDS, tmp_path, cfg, progress=False)
    other = torch.nn.Linear(2, 2)  # another model's layout
    torch.save({"model": other.state_dict(), "opt": {}, "step": 3, "config": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(GuardError, match="cannot resume from .*Missing key"):
        finetune(model, codec, RECORDS, tmp_path, cfg, progress=False)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_autocast_only_where_the_cpu_has_bf16(model_and_codec, tmp_path, monkeypatch, native):
    """bf16=True trains under bf16 autocast only on a CPU with native bf16; elsewhere (emulated bf16 took 191 s a
    teacher step against 12.7 s in float32 on an AVX2 EPYC) in float32, with a warning and the log row saying so."""
    import logging

    import guard.train.loop as loop

    seen, warned = [], []
    real = loop.verdict_loss

    def spy(*a, **k):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(*a, **k)

    monkeypatch.setattr(loop, "bf16_native", lambda: native)
    monkeypatch.setattr(loop, "verdict_loss", spy)
    model, codec = model_and_codec
    handler = logging.Handler()
    handler.emit = lambda r: warned.append(r.getMessage())
    loop.log.addHandler(handler)
    try:
        finetune(model, codec, RECORDS, tmp_path, TrainConfig(steps=1, accum=2, save_every=1, bf16=True), progress=False)
    finally:
        loop.log.removeHandler(handler)
    assert seen == [native, native]
    assert json.loads((tmp_path / "log.jsonl").read_text())["bf16"] is native
    assert any("no native bf16" in w for w in warned) is not native
