"""The bad-input table: each row is an input a user can get wrong and the outcome it must get.

Outcomes: a clear error (CLI: status 2 and a message naming the problem and the fix, never a traceback; API: the
named exception and message), or success where the input is legitimate. CLI rows run `lychee_hf.cli.main` in
this process on a tiny checkpoint. Rows about memory banks on disk live with the bank tests.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.testing import document_ids, question_ids, run_cli, tiny_backbone, tiny_lychee, tiny_tokenizer

DOCUMENT = "Alice was born in Paris. Paris is the capital of France. " * 6 + "The secret code is 4721. " * 2


@dataclass
class Row:
    what: str
    argv: list[str]
    message: str  # regex searched in stderr
    code: int = 2

    def __str__(self) -> str:
        return self.what


def _edited_checkpoint(source: Path, target: Path, config_edit=None, weights_edit=None) -> Path:
    shutil.copytree(source, target)
    if config_edit:
        config = json.loads((target / "config.json").read_text())
        config_edit(config)
        (target / "config.json").write_text(json.dumps(config))
    if weights_edit:
        weights = load_file(target / "model.safetensors")
        weights_edit(weights)
        save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-inputs")
    checkpoint = root / "ckpt"
    tiny_lychee().save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    stock = root / "stock-llama"
    tiny_backbone().save_pretrained(stock)
    tiny_tokenizer().save_pretrained(stock)
    (root / "no-config").mkdir()
    (root / "no-config" / "model.safetensors").write_bytes(b"")
    _edited_checkpoint(checkpoint, root / "no-text-config", config_edit=lambda c: c.pop("text_config"))
    _edited_checkpoint(checkpoint, root / "bogus-gate", config_edit=lambda c: c.update(gate_type="bogus"))
    _edited_checkpoint(checkpoint, root / "zip-mode", config_edit=lambda c: c.update(compression_mode="zip"))

    def drop(prefix):
        return lambda weights: [weights.pop(k) for k in list(weights) if k.startswith(prefix)]

    _edited_checkpoint(checkpoint, root / "no-compressor", weights_edit=drop("compressor."))
    _edited_checkpoint(checkpoint, root / "no-mlp-0", weights_edit=drop("model.layers.0.mlp."))
    _edited_checkpoint(
        checkpoint, root / "extra-tensor", weights_edit=lambda w: w.update({"model.extra.weight": torch.ones(2)})
    )
    (root / "doc.txt").write_text(DOCUMENT, encoding="utf-8")
    (root / "latin1.txt").write_bytes(("Café crème. " * 20).encode("latin-1"))
    (root / "binary.bin").write_bytes(b"\x00\x01\x02PK" * 50)
    (root / "empty.txt").write_text("  \n")
    (root / "blank.jsonl").write_text("\n\n")
    (root / "broken.jsonl").write_text('{"context": "fine"}\n{not json\n')
    (root / "nofield.jsonl").write_text('{"text": "a document"}\n')
    (root / "a-folder").mkdir()
    (root / "existing.json").write_text("keep me")
    (root / "corpus.jsonl").write_text(json.dumps({"id": "a", "context": DOCUMENT}) + "\n")
    (root / "questions.jsonl").write_text(json.dumps({"document": "a", "question": "Where?"}) + "\n")
    (root / "a-corpus").mkdir()  # what `ask` reads of a compressed corpus before loading the model: its manifest
    manifest = {"format": "lychee-corpus", "version": 1, "fingerprint": {}, "entries": []}
    (root / "a-corpus" / "corpus.json").write_text(json.dumps(manifest))
    return {"root": str(root), "ckpt": str(checkpoint), "doc": str(root / "doc.txt")}


ASK = ["ask", "--model", "{ckpt}", "--quiet", "--context", "{doc}", "--question", "What is the code?"]
CORPUS = ["compress", "--model", "{ckpt}", "--quiet", "--corpus"]
QUESTIONS = ["ask", "--model", "{ckpt}", "--quiet", "--bank", "{root}/a-corpus", "--questions"]

CLI_ROWS = [
    # --- context files
    Row(
        "missing context file",
        ["ask", "--model", "{ckpt}", "--context", "{root}/nope.txt", "--question", "q"],
        r"context file .*nope\.txt does not exist",
    ),
    Row(
        "context is a folder",
        ["ask", "--model", "{ckpt}", "--context", "{root}/a-folder", "--question", "q"],
        r"is a folder: pass a text or \.jsonl file",
    ),
    Row(
        "binary context file",
        ["ask", "--model", "{ckpt}", "--context", "{root}/binary.bin", "--question", "q"],
        r"looks binary",
    ),
    Row(
        "latin-1 context without --encoding",
        ["ask", "--model", "{ckpt}", "--context", "{root}/latin1.txt", "--question", "q"],
        r"not valid utf-8 \(byte 0xe9 at offset 3\): pass its encoding, e\.g\. --encoding latin-1",
    ),
    Row(
        "latin-1 context with --encoding latin-1",
        [
            "ask",
            "--model",
            "{ckpt}",
            "--quiet",
            "--context",
            "{root}/latin1.txt",
            "--encoding",
            "latin-1",
            "--question",
            "q",
        ],
        r"^",
        code=0,
    ),
    Row(
        "unknown --encoding",
        ["ask", "--model", "{ckpt}", "--context", "{doc}", "--encoding", "klingon", "--question", "q"],
        r"unknown text encoding 'klingon'",
    ),
    Row(
        "empty context file",
        ["ask", "--model", "{ckpt}", "--context", "{root}/empty.txt", "--question", "q"],
        r"is empty",
    ),
    Row(
        "JSONL with no documents",
        ["ask", "--model", "{ckpt}", "--context", "{root}/blank.jsonl", "--question", "q"],
        r"holds no documents",
    ),
    Row(
        "JSONL with a malformed line",
        ["ask", "--model", "{ckpt}", "--context", "{root}/broken.jsonl", "--question", "q"],
        r"broken\.jsonl:2 is not valid JSON",
    ),
    Row(
        "JSONL without the field",
        ["ask", "--model", "{ckpt}", "--context", "{root}/nofield.jsonl", "--question", "q"],
        r"no non-empty string field 'context' \(choose it with --field\)",
    ),
    # --- questions and outputs
    Row(
        "empty question",
        ["ask", "--model", "{ckpt}", "--context", "{doc}", "--question", ""],
        r"--question number 1 is empty",
    ),
    Row("empty question after others", [*ASK, "--question", "  "], r"--question number 2 is empty"),
    Row("--json OUT that exists", [*ASK, "--json", "{root}/existing.json"], r"exists: pass --overwrite"),
    Row("--json OUT in a missing folder", [*ASK, "--json", "{root}/missing/out.json"], r"folder .* does not exist"),
    Row("--json OUT that is a folder", [*ASK, "--json", "{root}/a-folder"], r"is a folder: name a file"),
    # --- numbers
    Row("--chunk-size 0", [*ASK, "--chunk-size", "0"], r"--chunk-size: must be a positive integer, got 0"),
    Row("--memory-budget 0", [*ASK, "--memory-budget", "0"], r"--memory-budget: must be a positive integer"),
    Row("--max-new-tokens 0", [*ASK, "--max-new-tokens", "0"], r"--max-new-tokens: must be a positive integer"),
    Row(
        "--max-new-tokens beyond the positions",
        [*ASK, "--max-new-tokens", "1000000000"],
        r"max_new_tokens=1000000000 would run the answer to position .* use at most \d+",
    ),
    Row("--ratio -1", [*ASK, "--ratio", "-1"], r"--ratio: must be 0 or more"),
    Row(
        "--ratio that does not divide the window",
        [*ASK, "--ratio", "5"],
        r"compression_window 32 is not a multiple of compression_ratio 5: use 30 or 35",
    ),
    Row(
        "--chunk-size beyond the backbone's positions",
        [*ASK, "--chunk-size", "100000"],
        r"beyond the backbone's max_position_embeddings",
    ),
    Row("--chunk-size not a number", [*ASK, "--chunk-size", "big"], r"invalid positive_int value: 'big'"),
    Row("--gate-threshold 1.5", [*ASK, "--gate-threshold", "1.5"], r"--gate-threshold: must lie in \[0, 1\]"),
    Row("--gate-max-blocks 0", [*ASK, "--gate-max-blocks", "0"], r"--gate-max-blocks: must be a positive integer"),
    Row("--dtype int8", [*ASK, "--dtype", "int8"], r"argument --dtype: invalid choice: 'int8'"),
    # --- models
    Row(
        "--model folder that does not exist",
        ["ask", "--model", "{root}/no-such-model", "--context", "{doc}", "--question", "q"],
        r"no-such-model does not exist",
    ),
    Row(
        "--model folder without config.json",
        ["ask", "--model", "{root}/no-config", "--context", "{doc}", "--question", "q"],
        r"holds no config\.json",
    ),
    Row(
        "--model a stock Llama folder",
        ["ask", "--model", "{root}/stock-llama", "--context", "{doc}", "--question", "q"],
        r"is a 'llama' checkpoint, not a LycheeMemory one.*convert",
    ),
    Row(
        "--model config without text_config",
        ["ask", "--model", "{root}/no-text-config", "--context", "{doc}", "--question", "q"],
        r"has no backbone config",
    ),
    Row(
        "--model with gate_type bogus",
        ["ask", "--model", "{root}/bogus-gate", "--context", "{doc}", "--question", "q"],
        r"gate_type='bogus' is not one of",
    ),
    Row(
        "--model with compression_mode zip",
        ["ask", "--model", "{root}/zip-mode", "--context", "{doc}", "--question", "q"],
        r"compression_mode='zip' is not one of",
    ),
    Row(
        "--model without compressor weights",
        ["ask", "--model", "{root}/no-compressor", "--context", "{doc}", "--question", "q"],
        r"missing keys: compressor\.",
    ),
    Row(
        "--model missing one layer's MLP",
        ["ask", "--model", "{root}/no-mlp-0", "--context", "{doc}", "--question", "q"],
        r"missing keys: model\.layers\.0\.mlp\.",
    ),
    Row(
        "--model with an unexpected tensor",
        ["ask", "--model", "{root}/extra-tensor", "--context", "{doc}", "--question", "q"],
        r"unexpected keys: model\.extra\.weight",
    ),
    Row(
        "--bank folder that does not exist",
        ["ask", "--model", "{ckpt}", "--bank", "{root}/no-bank", "--question", "q"],
        r"no-bank",
    ),
    Row(
        "--bank given a checkpoint folder",
        ["ask", "--model", "{ckpt}", "--bank", "{ckpt}", "--question", "q"],
        r"bank",
    ),
    Row(
        "--context and --bank together",
        ["ask", "--context", "{doc}", "--bank", "{root}", "--question", "q"],
        r"not allowed with argument",
    ),
    Row(
        "ask without a question",
        ["ask", "--context", "{doc}"],
        r"one of the arguments --question --questions is required",
    ),
    # --- other commands
    Row("info on a folder that is neither", ["info", "{root}/a-folder"], r"neither a checkpoint .* nor a memory bank"),
    Row("info on a stock Llama folder", ["info", "{root}/stock-llama"], r"is a 'llama' checkpoint"),
    Row(
        "compress into a non-empty folder",
        ["compress", "--model", "{ckpt}", "--context", "{doc}", "--out", "{root}"],
        r"is not empty: choose a new folder",
    ),
    Row(
        "compress a missing file",
        ["compress", "--model", "{ckpt}", "--context", "{root}/nope.txt", "--out", "{root}/new-bank"],
        r"does not exist",
    ),
    Row("convert into a non-empty folder", ["convert", "{ckpt}", "{root}"], r"is not empty"),
    Row(
        "convert a folder that does not exist", ["convert", "{root}/nothing-here", "{root}/converted"], r"nothing-here"
    ),
    Row("eval with --n 0", ["eval", "--task", "niah", "--n", "0", "--out", "{root}/ev"], r"--n: must be a positive"),
    Row(
        "eval with an unknown task",
        ["eval", "--task", "poetry", "--model", "{ckpt}", "--out", "{root}/ev"],
        r"unknown task 'poetry'",
    ),
    Row(
        "eval with an unknown method",
        ["eval", "--task", "niah", "--method", "magic", "--model", "{ckpt}", "--out", "{root}/ev"],
        r"unknown method\(s\) \['magic'\]",
    ),
    Row(
        "eval jsonl without --data",
        ["eval", "--task", "jsonl", "--model", "{ckpt}", "--out", "{root}/ev"],
        r"pass --data FILE",
    ),
    Row("train-gate into a non-empty folder", ["train-gate", "--task", "niah", "--out", "{root}"], r"is not empty"),
    Row("train-rl reusing the held-out seed", ["train-rl", "--seed", "0", "--out", "{root}/rl"], r"held-out seed"),
    Row("push a folder that does not exist", ["push", "{root}/nothing", "--repo-id", "me/x", "--dry-run"], r"nothing"),
    Row("an unknown command", ["summarise", "x"], r"invalid choice: 'summarise'"),
    Row(
        "an option on a command where it does nothing",
        ["compress", "--context", "{doc}", "--out", "{root}/b", "--max-new-tokens", "5"],
        r"unrecognized arguments",
    ),
    # --- corpus and questions files, and options that do not apply to the path taken (issue 31)
    Row(
        "--corpus is a folder",
        [*CORPUS, "{root}/a-folder", "--out", "{root}/banks"],
        r"corpus .*a-folder is a folder: pass a JSONL file",
    ),
    Row("--corpus is a device", [*CORPUS, "/dev/null", "--out", "{root}/banks"], r"is not a regular file"),
    Row("--corpus ''", [*CORPUS, "", "--out", "{root}/banks"], r"corpus \. is a folder"),
    Row(
        "--corpus into --out that is a file",
        [*CORPUS, "{root}/corpus.jsonl", "--out", "{root}/existing.json"],
        r"--out .*existing\.json is a file: name a folder",
    ),
    Row(
        "--id-field that no line has",
        [*CORPUS, "{root}/corpus.jsonl", "--out", "{root}/banks", "--id-field", "name"],
        r"no line of .* has the id field 'name' \(--id-field\)",
    ),
    Row(
        "compress --context into --out that is a file",
        ["compress", "--model", "{ckpt}", "--context", "{doc}", "--out", "{root}/existing.json"],
        r"--out .*existing\.json is a file: name a folder",
    ),
    Row(
        "--context is a device",
        ["compress", "--model", "{ckpt}", "--context", "/dev/null", "--out", "{root}/new-bank"],
        r"context /dev/null is not a regular file",
    ),
    Row(
        "--field with a plain-text context",
        [*ASK, "--field", "text"],
        r"--field text names a JSONL field, but .*doc\.txt is plain text",
    ),
    Row(
        "--questions is a folder",
        [*QUESTIONS, "{root}/a-folder", "--out", "{root}/answers.jsonl"],
        r"questions .*a-folder is a folder: pass a JSONL file",
    ),
    Row("--questions ''", [*QUESTIONS, "", "--out", "{root}/answers.jsonl"], r"questions \. is a folder"),
    Row(
        "--field with --questions",
        [*QUESTIONS, "{root}/questions.jsonl", "--out", "{root}/answers.jsonl", "--field", "text"],
        r"--field names the document field of a --context file",
    ),
    Row(
        "--batch-size 0",
        [*QUESTIONS, "{root}/questions.jsonl", "--out", "{root}/answers.jsonl", "--batch-size", "0"],
        r"--batch-size: must be a positive integer, got 0",
    ),
    Row(
        "--overwrite without --json OUT",
        [*ASK, "--overwrite"],
        r"--overwrite goes with --json OUT",
    ),
    Row(
        "--overwrite with --json to stdout",
        [*ASK, "--json", "--overwrite"],
        r"--overwrite goes with --json OUT",
    ),
    Row(
        "--field or --encoding with --bank",
        ["ask", "--bank", "{root}/a-corpus", "--question", "q", "--encoding", "latin-1"],
        r"--field and --encoding read a --context file; --bank reads a saved bank",
    ),
    Row(
        "bank convert --max-shard-size nan",
        ["bank", "convert", "{root}/a-folder", "{root}/converted", "--max-shard-size", "nan"],
        r"--max-shard-size: must be a positive number of MiB, got nan",
    ),
    Row(
        "bank convert --max-shard-size inf",
        ["bank", "convert", "{root}/a-folder", "{root}/converted", "--max-shard-size", "inf"],
        r"--max-shard-size: must be a positive number of MiB, got inf",
    ),
    Row(
        "bank convert --max-shard-size 0",
        ["bank", "convert", "{root}/a-folder", "{root}/converted", "--max-shard-size", "0"],
        r"--max-shard-size: must be a positive number of MiB, got 0",
    ),
    Row(
        "bank convert --max-shard-size big",
        ["bank", "convert", "{root}/a-folder", "{root}/converted", "--max-shard-size", "big"],
        r"--max-shard-size: must be a positive number of MiB, got big",
    ),
]


@pytest.mark.parametrize("row", CLI_ROWS, ids=str)
def test_cli_bad_input(row, paths):
    argv = [part.format(**paths) for part in row.argv]
    code, _, err = run_cli(*argv)
    assert code == row.code, err[-2000:]
    assert "Traceback" not in err
    if row.code == 2:
        import re

        assert re.search(row.message, err, re.IGNORECASE | re.DOTALL), err[-2000:]
        ours = [line for line in err.splitlines() if line.startswith("lychee-hf: error:")]
        assert len(ours) <= 1


def test_existing_json_out_is_left_as_it_was(paths):
    run_cli(*[part.format(**paths) for part in [*ASK, "--json", "{root}/existing.json"]])
    assert Path(paths["root"], "existing.json").read_text() == "keep me"


def test_overwrite_replaces_an_existing_json_out_and_still_prints_the_answer(paths, tmp_path):
    out = tmp_path / "answers.json"
    out.write_text("old")
    code, stdout, err = run_cli(*[p.format(**paths) for p in ASK] + ["--json", str(out), "--overwrite"])
    assert code == 0, err
    assert json.loads(out.read_text())["question"] == "What is the code?"
    assert stdout.strip() and f"written to {out}" in err


def test_answers_computed_before_a_failure_are_saved_and_named(paths, tmp_path, monkeypatch):
    calls = []
    original = LycheeMemoryForCausalLM.generate

    def fail_on_the_second_question(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the device went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LycheeMemoryForCausalLM, "generate", fail_on_the_second_question)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "answers.json"
    code, _, err = run_cli(*[p.format(**paths) for p in ASK] + ["--question", "Who?", "--json", str(out)])
    assert code == 2 and "the device went away" in err and not out.exists()
    saved = Path(err.split("were saved to ")[1].split(")")[0])
    assert json.loads(saved.read_text())[0]["question"] == "What is the code?"


def test_a_failed_convert_leaves_no_folder_behind_so_a_retry_runs(paths, tmp_path):
    source = tmp_path / "authors"
    shutil.copytree(paths["ckpt"], source)
    weights = load_file(source / "model.safetensors")
    weights["model.unknown_thing.weight"] = torch.ones(3)
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config["text_config"], "model_type": "qwen2"}))
    destination = tmp_path / "converted"
    first = run_cli("convert", source, destination)
    second = run_cli("convert", source, destination)
    assert first[0] == second[0] == 2
    assert "Errno" not in second[2] and not destination.exists()


# ------------------------------------------------------------------------------------------------- the API
def test_api_override_that_breaks_the_config_is_refused_before_building(paths):
    with pytest.raises(ValueError, match="not a multiple of compression_ratio 5"):
        LycheeMemoryForCausalLM.from_pretrained(paths["ckpt"], compression_ratio=5)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"compression_mode": "zip"}, "compression_mode='zip' is not one of"),
        ({"gate_type": "bogus"}, "gate_type='bogus' is not one of"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"gate_threshold": 2.0}, r"gate_threshold=2.0 must lie in \[0, 1\]"),
        ({"position_scheme": "random"}, "position_scheme='random' is not one of"),
    ],
)
def test_api_bad_override_is_a_value_error(paths, override, message):
    with pytest.raises(ValueError, match=message):
        LycheeMemoryForCausalLM.from_pretrained(paths["ckpt"], **override)


def test_api_stock_checkpoint_is_refused_naming_its_type(paths):
    with pytest.raises(ValueError, match="is a 'llama' checkpoint, not a LycheeMemory one"):
        LycheeMemoryForCausalLM.from_pretrained(Path(paths["root"]) / "stock-llama")


def test_api_missing_weights_are_refused_unless_allowed(paths):
    folder = Path(paths["root"]) / "no-compressor"
    with pytest.raises(ValueError, match="missing keys: compressor"):
        LycheeMemoryForCausalLM.from_pretrained(folder)
    model, info = LycheeMemoryForCausalLM.from_pretrained(folder, allow_missing_weights=True, output_loading_info=True)
    assert any(key.startswith("compressor.") for key in info["missing_keys"])


@pytest.mark.parametrize("which", ["context_ids", "input_ids"])
def test_api_float_token_ids_are_refused(which, tokenizer):
    model = tiny_lychee()
    inputs = {"input_ids": question_ids(tokenizer), "context_ids": document_ids(tokenizer, 100)}
    inputs[which] = inputs[which].float()
    with pytest.raises(TypeError, match=f"{which} must hold integer token ids, got dtype torch.float32"):
        model.generate(**inputs)


def test_api_compress_refuses_float_ids(tokenizer):
    with pytest.raises(TypeError, match="integer token ids"):
        tiny_lychee().compress(document_ids(tokenizer, 100).float())


def test_api_max_new_tokens_beyond_the_positions_is_refused_before_any_work(tokenizer):
    with pytest.raises(ValueError, match="use at most"):
        tiny_lychee().generate(
            input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 100), max_new_tokens=10**9
        )


def test_a_damaged_default_cache_names_the_folder_to_delete(monkeypatch, tmp_path):
    from lychee_hf import default_model

    monkeypatch.setenv("LYCHEE_HF_HOME", str(tmp_path))
    folder = default_model.default_model_dir()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"truncated")
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(RuntimeError, match=f"cached default model in {folder} is damaged .* delete that folder"):
        default_model.ensure_default_model(verbose=False)
