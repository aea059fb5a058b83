"""The README's and the docs pages' code runs as written. In each file (README.md, docs/*.md), Python blocks are
executed in order (one shared namespace per file, as a reader would paste them) against a tiny checkpoint standing
in for the embedded default; every `lychee-hf` command in a shell block is parsed by the real CLI parser; every
script a shell block runs answers `--help`. A block that needs a GPU, the Hub or the set-up itself is marked
`<!-- readme-test: skip (reason) -->` right above it; blocks without a language (diagrams, sample output) and
citations are not code."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import lychee_hf.default_model
from lychee_hf.cli import build_parser
from lychee_hf.testing import tiny_lychee, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"<!-- readme-test: skip \((.+?)\) -->\s*$")
NOT_CODE = ("", "bibtex")
# Files the Python blocks of a document must leave behind (beyond running without an error).
WRITES = {
    "README.md": ["bank/bank.json"],
    "docs/banks.md": ["bank/bank.json", "bank-int8/bank.json"],
    "docs/adapters-and-gate.md": ["out/reasoner/adapter_model.safetensors"],
    "docs/scale-out.md": ["banks/corpus.json", "answers.jsonl"],
}
# A short stand-in for examples/harbor_town.txt: 376 tokens, six 64-token blocks for the tiny model (block(3) exists).
SHORT_DOCUMENT = "Alice was born in Paris. Paris is the capital of France. " * 16 + "The secret code is 4721. " * 8


def code_blocks(document: str) -> list[tuple[str, str, str | None, int]]:
    """(language, code, skip reason, line) of every fenced block in `document` (a path relative to the root)."""
    lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[index])
        if not match:
            index += 1
            continue
        previous = lines[index - 1] if index else ""
        skip = SKIP_MARK.search(previous)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        blocks.append((match.group(1), "\n".join(lines[index + 1 : end]), skip.group(1) if skip else None, index + 1))
        index = end + 1
    return blocks


def shell_commands(language: str = "bash") -> list[tuple[str, str]]:
    """(command, where) of every line of every tested shell block, `where` as `FILE:LINE`."""
    commands = []
    for document in DOCUMENTS:
        for lang, code, skip, line in code_blocks(document):
            if lang == language and skip is None:
                for offset, text in enumerate(code.splitlines()):
                    command = text.split("  #")[0].strip()
                    if command:
                        commands.append((command, f"{document}:{line + 1 + offset}"))
    return commands


def test_the_docs_pages_exist():
    assert len(DOCUMENTS) > 1 and all(name.startswith("docs/") for name in DOCUMENTS[1:])


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_code_block_is_tested_or_marked(document):
    for language, _, skip, line in code_blocks(document):
        assert language in ("python", "bash", *NOT_CODE) or skip, f"{document}:{line}: block of kind {language!r}"


LAUNCHERS = ("accelerate launch", "torchrun")


def cli_argv(command: str) -> list[str] | None:
    """The lychee-hf arguments of a documented command: `lychee-hf ARGS`, or a launcher's `-m lychee_hf.cli ARGS`."""
    words = shlex.split(command)
    if words[0] == "lychee-hf":
        return words[1:]
    if command.startswith(LAUNCHERS) and "lychee_hf.cli" in words:
        return words[words.index("lychee_hf.cli") + 1 :]
    return None


@pytest.mark.parametrize("command, where", [c for c in shell_commands() if cli_argv(c[0]) is not None])
def test_cli_commands_in_the_docs_parse(command, where):
    argv = cli_argv(command)
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:
        assert exit.code == 0, f"{where}: `{command}` is not a valid lychee-hf command"


def test_every_shell_line_is_a_known_command():
    for command, where in shell_commands():
        assert command.startswith(("lychee-hf", "python ", *LAUNCHERS, "sbatch ")), f"{where}: `{command}`"
        if command.startswith(LAUNCHERS):
            assert cli_argv(command) is not None, f"{where}: launches something other than lychee_hf.cli"


def test_files_that_documented_commands_name_exist():
    for command, where in shell_commands():
        for word in shlex.split(command):
            if word.startswith(("examples/", "benchmarks/")) and word != "examples/harbor_town.txt/":
                assert (ROOT / word).exists(), f"{where}: {word} does not exist"


SCRIPTS = sorted({shlex.split(c)[1] for c, _ in shell_commands() if c.startswith("python ")})


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_in_the_docs_exist_and_answer_help(script):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_relative_links_in_the_docs_resolve():
    for document in DOCUMENTS:
        text = (ROOT / document).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert ((ROOT / document).parent / target).exists(), f"{document}: link to {target} is broken"


@pytest.fixture
def tiny_default(tmp_path, monkeypatch):
    """The reader's working folder: a tiny checkpoint as the 'embedded default' and a short example document."""
    checkpoint = tmp_path / "tiny-default"
    tiny_lychee().save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    monkeypatch.setattr(lychee_hf.default_model, "ensure_default_model", lambda verbose=True, trained=True: checkpoint)
    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    (work / "examples" / "harbor_town.txt").write_text(SHORT_DOCUMENT, encoding="utf-8")
    monkeypatch.chdir(work)
    return work


PYTHON_DOCUMENTS = [d for d in DOCUMENTS if any(lang == "python" and not skip for lang, _, skip, _ in code_blocks(d))]


@pytest.mark.slow
@pytest.mark.parametrize("document", PYTHON_DOCUMENTS)
def test_python_blocks_run_in_order(document, tiny_default):
    namespace: dict = {}
    for language, code, skip, line in code_blocks(document):
        if language != "python" or skip:
            continue
        try:
            exec(compile(code, f"{document}:{line}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"{document} block at line {line} failed: {error!r}") from error
    for written in WRITES.get(document, []):
        assert (tiny_default / written).is_file(), f"{document}: its code should have written {written}"


def test_every_document_that_must_write_files_has_python_blocks():
    assert set(WRITES) <= set(PYTHON_DOCUMENTS)
