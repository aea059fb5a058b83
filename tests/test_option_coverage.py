"""Every option of `compress` and `ask`, on each of their paths, is honoured or refused: never silently dropped.

The options are read from the parser itself (`lychee_hf.cli.build_parser`), so a new option is walked too. Each
path has a base command line; each option is added to it (or, when the base already has it, given another value)
and the run is compared with the base run:

- honoured: exit 0 and something differs, in what reaches the library (spies record every call of the loader,
  the readers, `compress_to_disk`, `compress_corpus`, `answer_questions`, `model.compress` / `generate` and
  `LycheeMemoryBank.from_pretrained`), in the files the run writes, or in what it prints;
- refused: exit 2 before the model is loaded, with a message naming the option.

REFUSED lists, per path, the options that must be refused; every other option must be honoured, except the few in
ACCEPTED, which say why they change nothing there. The model is a tiny one built once: the loader's spy returns it
instead of loading, so a run takes a fraction of a second.
"""

import json
import re
from pathlib import Path

import pytest
import torch

import lychee_hf.bank_tools
import lychee_hf.documents
import lychee_hf.loading
import lychee_hf.scale.corpus
import lychee_hf.scale.questions
from lychee_hf import LycheeMemoryBank, LycheeMemoryForCausalLM
from lychee_hf.cli import build_parser
from lychee_hf.testing import run_cli, tiny_lychee, tiny_tokenizer

TEXT = "Alice was born in Paris. Paris is the capital of France. " * 3
OTHER = "The secret code is 4721. The bakery opened in 1890. " * 3

PATHS = {
    "compress --context": ["compress", "--context", "{inputs}/doc.jsonl", "--out", "{run}/bank"],
    "compress --corpus": ["compress", "--corpus", "{inputs}/corpus.jsonl", "--out", "{run}/banks"],
    "ask --context": ["ask", "--context", "{inputs}/doc.txt", "--question", "Where?"],
    "ask --bank": ["ask", "--bank", "{inputs}/bank", "--question", "Where?"],
    "ask --questions": ["ask", "--bank", "{inputs}/banks", "--questions", "{inputs}/q.jsonl", "--out", "{run}/a.jsonl"],
}
# The value an option is given (another one than the base's, where the base has it); per path where it differs.
VALUES = {
    "--context": {"compress --context": "{inputs}/doc2.jsonl", "ask --context": "{inputs}/doc2.txt"},
    "--corpus": "{inputs}/corpus2.jsonl",
    "--bank": {"ask --bank": "{inputs}/bank2", "ask --questions": "{inputs}/bank"},
    "--memory": "{inputs}/bank",
    "--question": "Who?",
    "--questions": "{inputs}/q2.jsonl",
    "--out": "{run}/other",
    "--id-field": "name",
    "--field": "text",
    "--encoding": "latin-1",
    "--bank-dtype": "int8",
    "--max-bank-memory": "0",
    "--first-stage": "lexical",
    "--candidates": "3",
    "--model": "some/checkpoint",
    "--dtype": "bfloat16",
    "--ratio": "0",
    "--chunk-size": "32",
    "--memory-budget": "4",
    "--max-new-tokens": "2",
    "--batch-size": "3",
    "--json": "{run}/answers.json",
    "--gate-threshold": "0.3",
    "--gate-max-blocks": "1",
    "--answer-from": "evidence",
}
# Options that do not apply to a path: refused there (the others of an argparse exclusive group are refused by
# argparse itself: "not allowed with argument").
REFUSED = {
    "compress --context": {"--corpus", "--id-field"},
    "compress --corpus": {"--context"},
    "ask --context": {"--bank", "--memory", "--questions", "--out", "--batch-size", "--overwrite", "--field"},
    "ask --bank": {"--context", "--memory", "--questions", "--out", "--batch-size", "--overwrite", "--field",
                   "--encoding", "--bank-dtype", "--max-bank-memory"},
    "ask --questions": {"--context", "--memory", "--question", "--json", "--trace", "--field", "--bank-dtype",
                        "--max-bank-memory"},
}  # fmt: skip
ACCEPTED = {("compress --corpus", "--resume"): "a --corpus run always resumes; --resume may say so"}
HEAVY = {"load_pretrained", "compress_to_disk", "compress_corpus", "answer_questions", "compress", "generate"}


def options(command: str) -> list[str]:
    """Every option string of `lychee-hf COMMAND` (both spellings of an on/off option), --help aside."""
    subparsers = next(a for a in build_parser(training=False)._actions if a.dest == "command")
    parser = subparsers.choices[command]
    return [string for action in parser._actions if action.dest != "help" for string in action.option_strings]


def action_of(command: str, option: str):
    subparsers = next(a for a in build_parser(training=False)._actions if a.dest == "command")
    return next(a for a in subparsers.choices[command]._actions if option in a.option_strings)


def takes_value(command: str, option: str) -> bool:
    return action_of(command, option).nargs != 0


CASES = [(path, option) for path in PATHS for option in options(PATHS[path][0])]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The inputs every path reads, made with the tiny model the loader's spy hands out."""
    inputs = tmp_path_factory.mktemp("inputs")
    # A gate that reads the working memory, so that every gate option (--gate-revisit too) applies.
    model = tiny_lychee(max_answer_tokens=3, memory_budget=8, gate_type="query_likelihood", gate_reads_memory=True)
    tokenizer = tiny_tokenizer()
    (inputs / "doc.txt").write_text(TEXT)
    (inputs / "doc2.txt").write_text(OTHER)
    (inputs / "doc.jsonl").write_text(json.dumps({"context": TEXT, "text": OTHER}) + "\n")
    (inputs / "doc2.jsonl").write_text(json.dumps({"context": OTHER, "text": TEXT}) + "\n")
    rows = [{"id": "a", "name": "A", "context": TEXT, "text": OTHER}, {"id": "b", "name": "B", "context": OTHER}]
    (inputs / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (inputs / "corpus2.jsonl").write_text(json.dumps(rows[1]) + "\n")
    for name, text in (("bank", TEXT), ("bank2", OTHER)):
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        lychee_hf.bank_tools.compress_to_disk(model, ids, inputs / name, show_progress=False)
    lychee_hf.scale.corpus.compress_corpus(model, tokenizer, inputs / "corpus.jsonl", inputs / "banks",
                                           show_progress=False)  # fmt: skip
    (inputs / "q.jsonl").write_text(json.dumps({"document": "a", "question": "Where?"}) + "\n")
    (inputs / "q2.jsonl").write_text(json.dumps({"document": "b", "question": "Which code?"}) + "\n")
    return {"inputs": inputs, "model": model, "tokenizer": tokenizer, "baselines": {}}


def _plain(value, run: Path):
    """A call argument as comparable data: paths relative to the run's folder, tensors by value, objects by type."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.flatten()[:256].tolist())
    if isinstance(value, (str, Path)):
        return str(value).replace(str(run), "{run}")
    if isinstance(value, (list, tuple)):
        return [_plain(item, run) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item, run) for key, item in sorted(value.items())}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return type(value).__name__


@pytest.fixture
def spied(world, monkeypatch):
    """Installs the spies; returns the list their calls are recorded in (`name`, args, kwargs)."""
    calls = []

    def spy(owner, name, original=None, result=None):
        original = original or getattr(owner, name)

        def recording(*args, **kwargs):
            calls.append((name, args, kwargs))
            return result() if result else original(*args, **kwargs)

        monkeypatch.setattr(owner, name, recording)

    spy(lychee_hf.loading, "load_pretrained", result=lambda: (world["model"], world["tokenizer"]))
    spy(lychee_hf.documents, "read_documents")
    spy(lychee_hf.bank_tools, "compress_to_disk")
    spy(lychee_hf.scale.corpus, "read_corpus")
    spy(lychee_hf.scale.corpus, "compress_corpus")
    spy(lychee_hf.scale.questions, "read_questions")
    spy(lychee_hf.scale.questions, "answer_questions")
    for method in ("compress", "generate"):
        original = getattr(LycheeMemoryForCausalLM, method)
        monkeypatch.setattr(LycheeMemoryForCausalLM, method, _method_spy(calls, method, original))
    load_bank = LycheeMemoryBank.from_pretrained.__func__
    monkeypatch.setattr(
        LycheeMemoryBank, "from_pretrained", classmethod(_method_spy(calls, "bank.from_pretrained", load_bank))
    )
    return calls


def _method_spy(calls: list, name: str, original):
    def recording(self, *args, **kwargs):
        calls.append((name, args, kwargs))
        return original(self, *args, **kwargs)

    return recording


def run(world, calls: list, path: str, argv: list[str], run_dir: Path) -> dict:
    """One `lychee-hf` run in `run_dir`: its status, stderr, and its effect (calls, files written, output)."""
    run_dir.mkdir()
    words = [word.format(inputs=world["inputs"], run=run_dir) for word in argv]
    calls.clear()
    code, out, err = run_cli(*words)
    effect = {
        "calls": [(name, _plain(args, run_dir), _plain(kwargs, run_dir)) for name, args, kwargs in calls],
        "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()),
        "printed": re.sub(r"\d+", "#", out.replace(str(run_dir), "{run}")),
    }
    return {"code": code, "err": err, "effect": effect, "loaded": any(name in HEAVY for name, *_ in calls)}


def baseline(world, calls: list, path: str, tmp_path: Path) -> dict:
    if path not in world["baselines"]:
        first = run(world, calls, path, PATHS[path], tmp_path / "base")
        again = run(world, calls, path, PATHS[path], tmp_path / "base-again")
        assert first["code"] == 0, first["err"][-2000:]
        assert first["effect"] == again["effect"], "the base run must be deterministic for the comparison to hold"
        world["baselines"][path] = first
    return world["baselines"][path]


def with_option(path: str, option: str, command: str) -> list[str]:
    """The path's base command line with `option` added, or given another value where the base has it."""
    argv = list(PATHS[path])
    value = VALUES.get(option)
    value = value.get(path, next(iter(value.values()))) if isinstance(value, dict) else value
    if option in argv:
        argv[argv.index(option) + 1] = value
        return argv
    return [*argv, option, *([value] if takes_value(command, option) else [])]


@pytest.mark.parametrize("path, option", CASES, ids=[f"{path} {option}" for path, option in CASES])
def test_every_option_is_honoured_or_refused(world, spied, tmp_path, path, option):
    command = PATHS[path][0]
    base = baseline(world, spied, path, tmp_path)
    result = run(world, spied, path, with_option(path, option, command), tmp_path / "with-option")
    names = action_of(command, option).option_strings  # --gate-keep-last and --no-gate-keep-last
    if option in REFUSED[path] or "not allowed with argument" in result["err"]:
        assert option in REFUSED[path], f"{option} is refused on `{path}` but REFUSED does not say so"
        assert result["code"] == 2, result["err"][-2000:]
        assert any(name in result["err"] for name in names), f"the refusal must name {option}: {result['err']}"
        assert not result["loaded"], "a refused option must fail before any work"
        return
    assert result["code"] == 0, result["err"][-2000:]
    if (path, option) in ACCEPTED:
        assert result["effect"] == base["effect"]
        return
    assert result["effect"] != base["effect"], f"{option} changes nothing on `{path}`: honour it or refuse it"


def test_the_walk_covers_every_option_of_both_commands():
    for command in ("compress", "ask"):
        walked = {option for path, option in CASES if PATHS[path][0] == command}
        assert walked == set(options(command)) and len(walked) > 10
    valued = {option for path, option in CASES if takes_value(PATHS[path][0], option)}
    assert valued <= set(VALUES), f"give these options a value in VALUES: {sorted(valued - set(VALUES))}"
