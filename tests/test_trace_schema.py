"""One trace schema: `lychee-hf ask --json`, `LycheeTrace.to_dict` and the trace table agree; seconds add up."""

import json

import pytest

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.testing import question_ids, run_cli, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=4, memory_budget=8)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    path = tmp_path_factory.mktemp("doc") / "doc.txt"
    path.write_text("Alice was born in Paris. " * 20 + "The secret code is 4721. " * 8)
    return path


def test_cli_json_holds_exactly_the_api_trace_schema(checkpoint, document, tmp_path, tokenizer):
    code, _, err = run_cli("ask", "--model", checkpoint, "--context", document, "--question", "Code?", "--json",
                           tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    written = json.loads((tmp_path / "a.json").read_text())
    model = LycheeMemoryForCausalLM.from_pretrained(checkpoint)
    ids = tokenizer.encode(document.read_text(), add_special_tokens=False)
    import torch

    out = model.generate(
        input_ids=question_ids(tokenizer, "Code?"),
        context_ids=torch.tensor([ids]),
        return_dict_in_generate=True,
    )
    api = out.trace[0].to_dict(tokenizer)
    assert set(written) == set(api) | {"source", "question", "compress_seconds", "seconds"}
    assert set(written["trace"][0]) == set(api["trace"][0])
    assert written["answer_prompt_ids"] == api["answer_prompt_ids"] and written["answer"] == api["answer"]
    kept = [row for row in written["trace"] if row["kept"]]
    assert kept and all(row["prompt_ids"] and len(row["prompt_ids"]) == row["prompt_tokens"] for row in kept)


def test_block_seconds_and_the_answer_row_add_up_to_the_call(checkpoint, document, tmp_path):
    code, out, err = run_cli("ask", "--model", checkpoint, "--context", document, "--question", "Code?", "--trace",
                             "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    parts = sum(row["seconds"] for row in result["trace"]) + result["answer_seconds"]
    assert parts <= result["seconds"] + 0.01
    assert parts >= 0.5 * result["seconds"]  # the rest is tokenization and bookkeeping, not a missing turn
    table = [line for line in out.splitlines() if line.strip().startswith(("answer", "total"))]
    assert len(table) == 2 and result["answer"] in table[0]
