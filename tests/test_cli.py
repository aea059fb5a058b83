"""The `lychee-hf` commands, run in-process through `lychee_hf.cli.main` (`lychee_hf.testing.run_cli`); the last
tests start real processes, for what only they prove: the console script, `python -m lychee_hf.cli`, the exit
status and stderr of a real process, and a `--help` that imports neither torch nor transformers."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lychee_hf.testing import run_cli, tiny_lychee, tiny_tokenizer

DOCUMENT = "Alice was born in Paris. Paris is the capital of France. " * 12 + "The secret code is 4721. " * 3


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    path = tmp_path_factory.mktemp("ctx") / "doc.txt"
    path.write_text(DOCUMENT)
    return path


def test_ask_prints_an_answer(checkpoint, context):
    code, out, err = run_cli(
        "ask", "--model", str(checkpoint), "--context", str(context), "--question", "What is the code?"
    )
    assert code == 0, err
    assert out.strip()


def test_ask_trace_prints_a_per_block_table(checkpoint, context):
    code, out, err = run_cli(
        "ask", "--model", str(checkpoint), "--context", str(context), "--question", "Code?", "--trace"
    )
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.lstrip().startswith("block"))
    for column in ("gate", "kept", "memory", "decoded", "seconds"):
        assert column in header
    assert sum(1 for line in out.splitlines() if " yes " in line) >= 2


def test_ask_json_holds_answer_and_trace(checkpoint, context):
    code, out, err = run_cli(
        "ask", "--model", str(checkpoint), "--context", str(context), "--question", "Code?", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["question"] == "Code?" and isinstance(result["answer"], str)
    assert result["trace"][0]["kept"] is True and "gate_score" in result["trace"][0]


def test_compress_once_then_ask_several_questions_from_the_bank(checkpoint, context, tmp_path):
    bank = tmp_path / "bank"
    code, out, err = run_cli("compress", "--model", str(checkpoint), "--context", str(context), "--out", str(bank))
    assert code == 0, err
    assert "blocks" in out and (bank / "bank.json").exists()
    code, out, err = run_cli(
        "ask",
        "--model",
        str(checkpoint),
        "--bank",
        str(bank),
        "--question",
        "Code?",
        "--question",
        "Where?",
        "--json",
    )
    assert code == 0, err
    assert [r["question"] for r in json.loads(out)] == ["Code?", "Where?"]
    # The bank answers exactly as compressing the context in the same call does.
    _, direct, _ = run_cli(
        "ask", "--model", str(checkpoint), "--context", str(context), "--question", "Code?", "--json"
    )
    assert json.loads(out)[0]["answer"] == json.loads(direct)["answer"]


def test_jsonl_context_answers_each_document(checkpoint, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": DOCUMENT}) + "\n" + json.dumps({"text": "Bob lives in Rome. " * 20}) + "\n")
    code, out, err = run_cli(
        "ask", "--model", str(checkpoint), "--context", str(path), "--field", "text", "--question", "Where?", "--json"
    )
    assert code == 0, err
    assert [r["source"] for r in json.loads(out)] == [f"{path}#0", f"{path}#1"]


def test_info_prints_checkpoint_and_bank_settings(checkpoint, context, tmp_path):
    code, out, _ = run_cli("info", str(checkpoint))
    assert code == 0 and "chunk_size" in out and "checkpoint" in out
    run_cli("compress", "--model", str(checkpoint), "--context", str(context), "--out", str(tmp_path / "b"))
    code, out, _ = run_cli("info", str(tmp_path / "b"))
    assert code == 0 and "memory bank" in out and "blocks" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", "--context", "missing.txt", "--question", "q"], "context file missing.txt does not exist"),
        (["info", "nowhere"], "neither a checkpoint"),
    ],
)
def test_errors_print_one_line_without_traceback(checkpoint, args, message, tmp_path):
    code, out, err = run_cli(*args[:1], "--model", str(checkpoint), *args[1:]) if args[0] == "ask" else run_cli(*args)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("lychee-hf: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in err


def test_empty_context_is_one_clear_error(checkpoint, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    code, _, err = run_cli("ask", "--model", str(checkpoint), "--context", str(empty), "--question", "q")
    assert code == 2 and "is empty" in err and "Traceback" not in err


def test_bank_from_another_model_is_one_clear_error(checkpoint, context, tmp_path):
    other = tmp_path / "other"
    tiny_lychee(seed=4).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    run_cli("compress", "--model", str(other), "--context", str(context), "--out", str(tmp_path / "b"))
    code, _, err = run_cli("ask", "--model", str(checkpoint), "--bank", str(tmp_path / "b"), "--question", "q")
    assert code == 2 and "different model" in err and "weights_digest" in err and "Traceback" not in err


def test_compress_refuses_a_non_empty_output_folder(checkpoint, context, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_cli("compress", "--model", str(checkpoint), "--context", str(context), "--out", str(tmp_path))
    assert code == 2 and "not empty" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_ratio_override_switches_the_block_kind(checkpoint, context, tmp_path):
    code, _, err = run_cli(
        "compress", "--model", str(checkpoint), "--context", str(context), "--out", str(tmp_path / "b"), "--ratio", "0"
    )
    assert code == 0, err
    code, out, _ = run_cli("info", str(tmp_path / "b"))
    settings = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert settings["compression_mode"] == "lossless"
    assert settings["kind"] == "memory bank"


def test_train_gate_writes_a_model_with_a_gate_adapter_and_metrics(checkpoint, tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "gated"
    code, stdout, err = run_cli(
        "train-gate", "--model", str(checkpoint), "--task", "niah", "--length", "300", "--n", "4",
        "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "auroc" in stdout and (out / "gate" / "adapter_model.safetensors").is_file()
    metrics = json.loads((out / "gate_metrics.json").read_text())
    assert metrics["examples"] == 4 and metrics["eval_rows"] > 0
    code, _, err = run_cli("train-gate", "--model", str(checkpoint), "--task", "niah", "--out", str(out))
    assert code == 2 and "is not empty" in err


def test_pretrain_compressor_writes_a_model_and_the_loss_table(checkpoint, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(DOCUMENT * 8)
    out = tmp_path / "pretrained"
    code, stdout, err = run_cli(
        "pretrain-compressor", "--model", str(checkpoint), "--text", str(text), "--continuation-tokens", "8",
        "--max-train-rows", "4", "--max-eval-rows", "2", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "compressed" in stdout and "raw" in stdout and (out / "compressor_metrics.json").is_file()
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("command", ["train-gate", "pretrain-compressor", "train-rl"])
def test_every_training_command_takes_a_time_limit(command):
    from lychee_hf.cli import build_parser

    required = ["--task", "niah"] if command == "train-gate" else []
    assert build_parser().parse_args([command, *required, "--out", "x", "--max-minutes", "2.5"]).max_minutes == 2.5


def test_pretrain_compressor_stops_at_the_time_limit_with_a_checkpoint_to_resume(checkpoint, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(DOCUMENT * 8)
    out = tmp_path / "pretrained"
    arguments = [
        "pretrain-compressor", "--model", str(checkpoint), "--text", str(text), "--continuation-tokens", "8",
        "--max-train-rows", "4", "--batch-size", "1", "--max-eval-rows", "2", "--out", str(out), "--quiet",
    ]  # fmt: skip
    code, _, err = run_cli(*arguments, "--max-minutes", "1e-6")
    assert code == 0, err
    assert [p.name for p in (out / "trainer").glob("checkpoint-*")] == ["checkpoint-1"]  # stopped after one step


def test_pretrain_compressor_distills_on_reading_rows(checkpoint, tmp_path):
    out = tmp_path / "distilled"
    code, stdout, err = run_cli(
        "pretrain-compressor", "--model", str(checkpoint), "--continuation-tokens", "8", "--max-train-rows", "0",
        "--max-eval-rows", "2", "--distill-weight", "1", "--distill-temperature", "2", "--reading-task", "facts",
        "--reading-n", "1", "--reading-length", "300", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "KL to lossless reading" in stdout
    metrics = json.loads((out / "compressor_metrics.json").read_text())
    assert metrics["train_rows"] == metrics["reading_rows"] > 0 and "kl_to_lossless" in metrics["after"]
    code, _, err = run_cli("pretrain-compressor", "--distill-weight", "-1", "--out", str(tmp_path / "bad"))
    assert code != 0 and "distill_weight must be 0 or more" in err


def test_train_rl_writes_a_model_with_a_reasoner_adapter_and_the_reward_log(checkpoint, tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "rl"
    code, stdout, err = run_cli(
        "train-rl", "--model", str(checkpoint), "--task", "niah", "--lengths", "300", "--n", "2",
        "--num-generations", "2", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "reward" in stdout and (out / "reasoner" / "adapter_model.safetensors").is_file()
    log = json.loads((out / "rl_log.json").read_text())
    assert log["examples"] == 2 and len(log["log"]) == 2 and "reward" in log["log"][0]


def test_train_rl_refuses_a_curriculum_that_reuses_the_held_out_seed(checkpoint, tmp_path):
    code, _, err = run_cli(
        "train-rl", "--model", str(checkpoint), "--lengths", "300,600", "--seed", "0", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "held-out seed 0" in err


@pytest.mark.parametrize("command", ["train-rl", "train-gate"])
def test_training_commands_refuse_a_held_out_task(checkpoint, tmp_path, command):
    out = tmp_path / "x"
    code, _, err = run_cli(command, "--model", str(checkpoint), "--task", "twohop-heldout", "--out", str(out))
    assert code == 2 and "['twohop-heldout'] are held out" in err and not out.exists()


def test_training_options_come_from_the_config_dataclasses():
    """Each default of a training command is its dataclass field's (or a CLI default the command explains), and
    the flags users know stay: `--epochs`, `--batch-size`, `--learning-rate`, `--lora-r`, `--compressor-lora-r`."""
    from lychee_hf.cli import build_parser
    from lychee_hf.training import CompressorPretrainingConfig, GateTrainingConfig, LycheeGRPOConfig

    parser = build_parser()
    gate = parser.parse_args(["train-gate", "--task", "niah", "--out", "x", "--epochs", "2", "--batch-size", "4"])
    assert (gate.num_train_epochs, gate.per_device_train_batch_size) == (2.0, 4)
    assert gate.learning_rate == GateTrainingConfig.learning_rate and gate.teacher == GateTrainingConfig.teacher
    assert (gate.lora_r, gate.lora_alpha, gate.seed) == (8, None, 1000)  # alpha None: 2 x rank
    pretrain = parser.parse_args(["pretrain-compressor", "--out", "x", "--compressor-lora-r", "4"])
    assert pretrain.lora_r == 4 and pretrain.continuation_tokens == CompressorPretrainingConfig.continuation_tokens
    assert parser.parse_args(["pretrain-compressor", "--out", "x"]).lora_r is None  # no compressor adapter
    rl = parser.parse_args(["train-rl", "--out", "x", "--no-compressor", "--learning-rate", "3e-5", "--lora-r", "4"])
    assert (rl.train_compressor, rl.learning_rate, rl.lora_r) == (False, 3e-5, 4)
    assert rl.num_generations == LycheeGRPOConfig.num_generations and rl.beta == LycheeGRPOConfig.beta


def test_every_option_of_every_command_has_help_text():
    from lychee_hf.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, sub in subparsers.items()
        for action in sub._actions
        if action.dest != "help" and not action.help
    ]
    assert not missing, missing
    assert all(sub.epilog and "examples:" in sub.epilog for sub in subparsers.values())


def test_version_names_the_package_and_its_stack(capsys):
    from lychee_hf.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert re.match(
        r"lychee-hf \d+\.\d+\.\d+ \(transformers \S+, peft \S+, accelerate \S+, torch \S+\)", capsys.readouterr().out
    )


def test_help_loads_neither_torch_nor_transformers():
    script = (
        "import contextlib, io, sys, lychee_hf.cli as c\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    c.main(['--help'])\n"
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_info_on_a_lossless_bank_shows_no_memory_token_settings(checkpoint, context, tmp_path, capsys):
    from lychee_hf.cli import main

    assert (
        main(
            [
                "compress",
                "--model",
                str(checkpoint),
                "--context",
                str(context),
                "--out",
                str(tmp_path / "b"),
                "--ratio",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(tmp_path / "b")]) == 0
    settings = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert settings["compression_mode"] == "lossless"
    assert not {"compression_ratio", "compression_window", "memory_token_placement"} & set(settings)


def test_ask_passes_gate_policy_flags_to_generate(checkpoint, context, tmp_path, capsys):
    from lychee_hf.cli import main

    out = tmp_path / "a.json"
    argv = ["ask", "--model", str(checkpoint), "--context", str(context), "--question", "Code?", "--quiet"]
    assert main([*argv, "--gate-max-blocks", "1", "--json", str(out)]) == 0
    trace = json.loads(out.read_text())["trace"]
    assert sum(step["kept"] for step in trace) == 1
    assert any(step["gate_decision"] == "block limit" for step in trace)


def test_the_cli_offers_every_bank_storage_format():
    from lychee_hf.commands.arguments import BANK_DTYPES
    from lychee_hf.modeling.kv_quant_lychee import BANK_DTYPES as formats

    assert tuple(BANK_DTYPES) == tuple(formats)


# ------------------------------------------------------------------------------------- real processes
def test_the_console_script_lists_every_command():
    script = shutil.which("lychee-hf") or str(Path(sys.executable).parent / "lychee-hf")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("ask", "compress", "info", "convert", "bank", "push", "eval", "serve", "train-gate", "train-rl"):
        assert f"    {command} " in result.stdout


def test_a_real_process_exits_2_with_one_error_line(checkpoint, context):
    result = subprocess.run(
        [sys.executable, "-m", "lychee_hf.cli", "ask", "--model", str(checkpoint), "--context", "missing.txt",
         "--question", "q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lychee-hf: error:")]
    assert errors == ["lychee-hf: error: context file missing.txt does not exist"]
    assert "Traceback" not in result.stderr


def test_a_real_process_reports_a_usage_error_with_status_2():
    result = subprocess.run(
        [sys.executable, "-m", "lychee_hf.cli", "train-rl", "--n", "0", "--out", "x"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "argument --n: must be a positive integer, got 0" in result.stderr


def test_train_rl_resumes_an_interrupted_run_and_records_every_start(checkpoint, tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "rl"
    arguments = [
        "train-rl", "--model", str(checkpoint), "--task", "niah", "--lengths", "300", "--n", "2",
        "--num-generations", "2", "--out", str(out), "--quiet",
    ]  # fmt: skip
    # Stops after its first step; the default schedule (every 50 steps) would write no checkpoint there, the time
    # limit does.
    code, _, err = run_cli(*arguments, "--max-minutes", "1e-6")
    assert code == 0, err
    assert json.loads((out / "rl_log.json").read_text())["steps"] == 1
    code, _, err = run_cli(*arguments, "--resume")
    assert code == 0, err
    log = json.loads((out / "rl_log.json").read_text())
    assert log["steps"] == 2 and [entry["step"] for entry in log["log"]] == [1, 2]
    assert [run["resumed_from"] is not None for run in log["runs"]] == [False, True]


def test_resume_of_a_folder_that_does_not_exist_says_so(checkpoint, tmp_path):
    code, _, err = run_cli(
        "train-gate", "--model", str(checkpoint), "--task", "niah", "--out", str(tmp_path / "no"), "--resume"
    )
    assert code == 2 and "nothing to resume" in err


def test_ask_passes_gate_revisit_to_generate(checkpoint, context, capsys):
    from lychee_hf.cli import main

    argv = ["ask", "--model", str(checkpoint), "--context", str(context), "--question", "Code?", "--quiet"]
    # The test checkpoint's gate ignores the memory, so generate refuses the second look: the flag reached it.
    assert main([*argv, "--gate-revisit"]) != 0
    assert "gate_revisit needs a gate that reads the working memory" in capsys.readouterr().err
