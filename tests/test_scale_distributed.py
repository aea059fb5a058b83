"""Two real processes on CPU (`torchrun --nproc_per_node 2`, accelerate's MULTI_CPU over gloo) against one process:
corpus compression, questions, sharded eval (`dist_scale.py`), and a training step of every trainer
(`dist_train_step.py`). On GPUs the same code runs under `accelerate launch --multi_gpu`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist_scale import run_pipeline
from lychee_hf import LycheeMemoryBank
from lychee_hf.scale.corpus import read_corpus_manifest
from lychee_hf.testing import tiny_lychee, tiny_tokenizer

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent


def torchrun(processes: int, script: str, *args) -> str:
    """Runs `script` under torchrun on a free port (other jobs on the machine may hold the default one); returns
    what it printed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    result = subprocess.run([*command, script, *map(str, args)], cwd=TESTS, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def without_timings(value):
    """`value` with every wall-time field dropped (they differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k and k != "process"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    tiny_lychee(max_answer_tokens=4, memory_budget=8).save_pretrained(folder / "ckpt")
    tiny_tokenizer().save_pretrained(folder / "ckpt")
    docs = [
        {"id": f"doc-{i}", "context": "Alice was born in Paris. " * (5 + 7 * i) + f"Code {4700 + i}."} for i in range(5)
    ]
    with open(folder / "corpus.jsonl", "wb") as handle:
        for line in [*docs[:3], b'{"id": "latin1", "context": "caf\xe9"}', {"id": "empty", "context": " "}, *docs[3:]]:
            handle.write((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n")
    questions = [{"document": f"doc-{i % 5}", "question": "What is the code?", "id": i} for i in range(7)]
    questions.insert(3, {"document": "nowhere", "question": "Where?"})
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return folder


@pytest.fixture(scope="module")
def two(inputs):
    out = inputs / "two"
    torchrun(2, "dist_scale.py", "--model", inputs / "ckpt", "--corpus", inputs / "corpus.jsonl", "--questions",
             inputs / "questions.jsonl", "--out", out)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def one(inputs):
    out = inputs / "one"
    run_pipeline(inputs / "ckpt", inputs / "corpus.jsonl", inputs / "questions.jsonl", out)
    return out


def test_torchrun_on_cpu_gives_two_cooperating_processes(two):
    records = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["distributed_type"] for r in records] == ["DistributedType.MULTI_CPU"] * 2
    assert [r["num_processes"] for r in records] == [2, 2]


def test_two_processes_share_the_corpus_and_write_what_one_process_writes(one, two):
    entries = read_corpus_manifest(two / "banks")["entries"]
    assert {e["process"] for e in entries if e["status"] == "ok"} == {0, 1}
    assert without_timings(entries) == without_timings(read_corpus_manifest(one / "banks")["entries"])
    assert [e["reason"] for e in entries if e["status"] == "failed"] == [
        "bad encoding: not utf-8 at byte 32",
        "empty document",
    ]
    for entry in (e for e in entries if e["status"] == "ok"):
        a = LycheeMemoryBank.from_pretrained(one / "banks" / entry["bank"])
        b = LycheeMemoryBank.from_pretrained(two / "banks" / entry["bank"])
        for i in range(len(a)):
            torch.testing.assert_close(a.block(i).keys, b.block(i).keys)
            torch.testing.assert_close(a.block(i).values, b.block(i).values)


def test_answers_of_two_processes_equal_one_process_in_input_order(one, two):
    rows = [json.loads(line) for line in (two / "answers.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in (one / "answers.jsonl").read_text().splitlines()]
    assert [row["line"] for row in rows] == list(range(1, 9)) and "error" in rows[3]


def test_sharded_eval_equals_single_process_eval(one, two):
    def predictions(folder):
        return [without_timings(json.loads(line)) for line in (folder / "predictions.jsonl").read_text().splitlines()]

    assert predictions(two / "eval") == predictions(one / "eval")
    scores = [(folder / "summary.md").read_text().split("## Cost")[0] for folder in (one / "eval", two / "eval")]
    assert scores[0] == scores[1]
    assert not list((two / "eval").glob("predictions.part-*"))


# ----------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    for processes in (1, 2):
        torchrun(processes, "dist_train_step.py", "--out", out / str(processes), "--global-batch", 4)
    return out


TRAINERS = ["gate", "compressor", "grpo"]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_two_process_step_equals_the_one_process_step_with_the_same_global_batch(steps, trainer):
    initial = load_file(steps / "1" / f"{trainer}-initial.safetensors")
    alone = load_file(steps / "1" / f"{trainer}-rank0.safetensors")
    shared = load_file(steps / "2" / f"{trainer}-rank0.safetensors")
    assert sum(not torch.equal(alone[name], initial[name]) for name in alone) >= len(alone) - 1  # it trained
    for name in alone:
        torch.testing.assert_close(shared[name], alone[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_both_processes_hold_the_same_weights_after_a_step(steps, trainer):
    first = load_file(steps / "2" / f"{trainer}-rank0.safetensors")
    second = load_file(steps / "2" / f"{trainer}-rank1.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)
    record = json.loads((steps / "2" / f"{trainer}-rank0.json").read_text())
    assert record["distributed_type"] == "DistributedType.MULTI_CPU" and record["steps"] == 2


@pytest.mark.parametrize("trainer", TRAINERS)
def test_two_processes_log_the_losses_of_one_process(steps, trainer):
    alone, shared = (json.loads((steps / p / f"{trainer}-rank0.json").read_text())["losses"] for p in ("1", "2"))
    assert len(alone) == 2 and alone == pytest.approx(shared, rel=1e-5, abs=1e-7)


def test_grpo_logs_the_rewards_of_every_process(steps):
    def rewards(processes):
        log = json.loads((steps / processes / "grpo-rank0.json").read_text())["log"]
        return [v for entry in log if "reward" in entry for v in (entry["reward"], entry["reward_std"], entry["turns"])]

    assert len(rewards("1")) == 2 * 3 and rewards("2") == pytest.approx(rewards("1"))


def test_train_rl_under_two_processes_writes_one_trained_model(inputs, tmp_path):
    # No --n here: torchrun's own parser takes it for an abbreviation of its options (accelerate launch does not).
    out = tmp_path / "trained"
    output = torchrun(2, "-m", "lychee_hf.cli", "train-rl", "--model", inputs / "ckpt", "--task", "niah",
                      "--lengths", "100", "--num-generations", "2", "--max-steps", "1", "--out", out,
                      "--quiet")  # fmt: skip
    assert output.count("wrote ") == 1  # the main process saves and reports
    log = json.loads((out / "rl_log.json").read_text())
    assert log["steps"] == 1 and log["log"][0]["reward"] >= 0
    assert (out / "reasoner" / "adapter_model.safetensors").is_file() and (out / "config.json").is_file()


# ----------------------------------------------------------------------------------------------- FSDP2
def test_an_fsdp2_compressor_pretraining_step_equals_the_one_process_step(tmp_path):
    # Two processes shard every decoder layer and the root with `fully_shard` (dist_fsdp_step.py); one process
    # runs the same step unsharded. Same global batch: the updated weights agree up to float reduction order.
    for processes in (1, 2):
        torchrun(processes, "dist_fsdp_step.py", "--out", tmp_path / str(processes), "--global-batch", 4)
    initial = load_file(tmp_path / "1" / "compressor-initial.safetensors")
    alone = load_file(tmp_path / "1" / "compressor.safetensors")
    sharded = load_file(tmp_path / "2" / "compressor.safetensors")
    assert sum(not torch.equal(alone[name], initial[name]) for name in alone) >= len(alone) - 1  # it trained
    for name in alone:
        torch.testing.assert_close(sharded[name], alone[name], rtol=1e-5, atol=1e-6)


def test_two_fsdp2_grpo_steps_equal_the_one_process_steps(tmp_path):
    # Process 0 gets two short documents and process 1 two long ones, so they sample and score different numbers of
    # turns (forward calls); the trainer's step keeps the weights gathered and reduces the gradients once. Two steps:
    # the second re-gathers the updated weights (and every LoRA A moves once its B has).
    for processes in (1, 2):
        torchrun(processes, "dist_fsdp_step.py", "--out", tmp_path / str(processes), "--global-batch", 4,
                 "--trainers", "grpo", "--steps", 2)  # fmt: skip
    initial = load_file(tmp_path / "1" / "grpo-initial.safetensors")
    alone = load_file(tmp_path / "1" / "grpo.safetensors")
    sharded = load_file(tmp_path / "2" / "grpo.safetensors")
    # The last compressor layer's memory queries feed no exported K/V: the one weight without a gradient.
    assert [name for name in alone if torch.equal(alone[name], initial[name])] == ["compressor.layers.1.q_proj.weight"]
    for name in alone:
        torch.testing.assert_close(sharded[name], alone[name], rtol=1e-5, atol=1e-6)
