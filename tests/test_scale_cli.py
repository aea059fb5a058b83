"""`lychee-hf compress --corpus`, `lychee-hf ask --questions`, and an eval run resumed from a multi-process run's
part files, in one process."""

import json

import pytest

from lychee_hf.cli import main
from lychee_hf.eval.runner import EvalSettings, run_eval
from lychee_hf.testing import save_tiny_checkpoint, tiny_lychee


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=4, memory_budget=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    rows = [{"name": "alice", "context": "Alice was born in Paris. " * 12}, {"name": "bob", "context": ""}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_compress_corpus_then_ask_its_questions(checkpoint, corpus, tmp_path, capsys):
    code = main(["compress", "--model", str(checkpoint), "--corpus", str(corpus), "--id-field", "name",
                 "--out", str(tmp_path / "banks"), "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "2 documents: 1 compressed, 0 already complete, 1 failed" in out
    assert "failed: bob (line 2): empty document" in out
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"document": "alice", "question": "Where was Alice born?", "id": 7}) + "\n")
    code = main(["ask", "--model", str(checkpoint), "--bank", str(tmp_path / "banks"), "--questions",
                 str(questions), "--out", str(tmp_path / "a.jsonl"), "--quiet"])  # fmt: skip
    assert code == 0 and "1 of 1 questions answered" in capsys.readouterr().out
    (row,) = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert row["id"] == 7 and row["document"] == "alice" and isinstance(row["answer"], str)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--context", "q.jsonl", "--questions", "q.jsonl", "--out", "a.jsonl"], "--questions needs --bank"),
        (["--bank", "banks", "--questions", "q.jsonl"], "--questions needs --bank"),
        (["--bank", "banks", "--questions", "q.jsonl", "--out", "taken.jsonl"], "pass --overwrite"),
        (["--bank", "banks", "--question", "Why?", "--out", "a.jsonl"], "--out and --batch-size go with --questions"),
        (["--bank", "banks", "--questions", "q.jsonl", "--out", "a.jsonl"], "holds no memory bank"),
    ],
)
def test_questions_errors_are_one_line(checkpoint, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.jsonl").write_text('{"question": "Why?"}\n')
    (tmp_path / "taken.jsonl").write_text("mine\n")
    (tmp_path / "banks").mkdir()
    assert main(["ask", "--model", str(checkpoint), *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert (tmp_path / "taken.jsonl").read_text() == "mine\n"


def test_id_field_goes_with_a_corpus(checkpoint, tmp_path, capsys):
    (tmp_path / "doc.txt").write_text("Some text.")
    args = ["compress", "--model", str(checkpoint), "--context", str(tmp_path / "doc.txt"), "--id-field", "name"]
    assert main([*args, "--out", str(tmp_path / "bank")]) == 2
    assert "--id-field goes with --corpus" in capsys.readouterr().err


def test_overwrite_replaces_an_answers_file(checkpoint, corpus, tmp_path, capsys):
    main(["compress", "--model", str(checkpoint), "--corpus", str(corpus), "--out", str(tmp_path / "banks"), "--quiet"])
    (tmp_path / "q.jsonl").write_text(json.dumps({"document": "1", "question": "Where?"}) + "\n")
    (tmp_path / "a.jsonl").write_text("old\n")
    args = ["ask", "--model", str(checkpoint), "--bank", str(tmp_path / "banks"), "--questions"]
    code = main([*args, str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "a.jsonl"), "--overwrite", "--quiet"])
    assert code == 0 and "answer" in json.loads((tmp_path / "a.jsonl").read_text())


def test_a_corpus_in_another_encoding_is_read_with_encoding(checkpoint, tmp_path, capsys):
    (tmp_path / "docs.jsonl").write_bytes(
        '{"id": "caf\u00e9", "context": "Un caf\u00e9 \u00e0 Paris."}\n'.encode("latin-1")
    )
    args = ["compress", "--model", str(checkpoint), "--corpus", str(tmp_path / "docs.jsonl"), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "utf8")]) == 2  # every document failed: exit 2
    assert "1 failed" in capsys.readouterr().out  # not UTF-8: refused, never read with replacement characters
    assert main([*args, "--encoding", "latin-1", "--out", str(tmp_path / "latin1")]) == 0
    assert "1 compressed" in capsys.readouterr().out


def test_corpus_and_context_are_alternatives(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--context", "a.txt", "--corpus", "b.jsonl", "--out", "x"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_interrupted_multi_process_eval_resumes_from_its_part_files(tokenizer, tmp_path):
    model = tiny_lychee(max_answer_tokens=4, memory_budget=8)
    settings = EvalSettings(task="niah", lengths=[200], n=2, methods=["lychee", "memagent"], memagent_chunk_tokens=128)
    run_eval(model, tokenizer, settings, tmp_path / "whole", show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "whole" / "predictions.jsonl").read_text().splitlines()]
    cut = tmp_path / "cut"
    cut.mkdir()
    kept = [{**row, "prediction": "from a part file"} for row in rows[1:3]]
    # Process 1 died while writing its second line; process 0 finished one.
    (cut / "predictions.part-1.jsonl").write_text(json.dumps(kept[1]) + "\n" + json.dumps(rows[0])[:50])
    (cut / "predictions.part-0.jsonl").write_text(json.dumps(kept[0]) + "\n")
    run_eval(model, tokenizer, settings, cut, show_progress=False)
    resumed = {(r["method"], r["id"]): r for r in map(json.loads, (cut / "predictions.jsonl").read_text().splitlines())}
    assert len(resumed) == len(rows) == 4 and not list(cut.glob("predictions.part-*"))
    assert [resumed[(r["method"], r["id"])]["prediction"] for r in rows] == [
        rows[0]["prediction"],
        "from a part file",
        "from a part file",
        rows[3]["prediction"],
    ]


def test_gate_options_reach_generate_on_the_batched_path(checkpoint, corpus, tmp_path, monkeypatch):
    from lychee_hf import LycheeMemoryForCausalLM

    main(["compress", "--model", str(checkpoint), "--corpus", str(corpus), "--out", str(tmp_path / "banks"), "--quiet"])
    (tmp_path / "q.jsonl").write_text(json.dumps({"document": "1", "question": "Where?"}) + "\n")
    seen, generate = [], LycheeMemoryForCausalLM.generate

    def spy(self, *args, **kwargs):
        seen.append({k: v for k, v in kwargs.items() if k.startswith("gate_")})
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(LycheeMemoryForCausalLM, "generate", spy)
    code = main(["ask", "--model", str(checkpoint), "--bank", str(tmp_path / "banks"), "--questions",
                 str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "a.jsonl"), "--quiet", "--gate-max-blocks", "1",
                 "--gate-threshold", "0.3", "--no-gate-keep-last"])  # fmt: skip
    assert code == 0
    assert seen == [{"gate_max_blocks": 1, "gate_threshold": 0.3, "gate_keep_last": False}]


@pytest.mark.parametrize("option", [["--trace"], ["--json", "out.json"]])
def test_single_question_options_are_refused_with_questions(checkpoint, tmp_path, capsys, option):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "Where?"}) + "\n")
    args = ["ask", "--model", str(checkpoint), "--bank", str(tmp_path), "--questions", str(tmp_path / "q.jsonl")]
    assert main([*args, "--out", str(tmp_path / "a.jsonl"), *option]) == 2
    assert "go with --question" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()


def test_the_old_memory_option_still_names_the_bank(checkpoint, corpus, tmp_path, capsys):
    main(["compress", "--model", str(checkpoint), "--corpus", str(corpus), "--out", str(tmp_path / "banks"), "--quiet"])
    (tmp_path / "q.jsonl").write_text(json.dumps({"document": "1", "question": "Where?"}) + "\n")
    code = main(["ask", "--model", str(checkpoint), "--memory", str(tmp_path / "banks"), "--questions",
                 str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "a.jsonl"), "--quiet"])  # fmt: skip
    assert code == 0 and "--memory is deprecated, use --bank" in capsys.readouterr().err


def open_one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    return dist


def test_a_command_closes_the_process_group_it_ran_under(tmp_path, capsys):
    # A gloo group left to the interpreter's exit can abort a torchrun process after its work is done.
    dist = open_one_process_group(tmp_path)
    code = main(["info", str(tmp_path / "no-such-bank")])
    assert code == 2 and "no-such-bank" in capsys.readouterr().err
    assert not dist.is_initialized()


def test_end_distributed_waits_then_closes_the_group(tmp_path):
    from lychee_hf.scale.distributed import end_distributed

    dist = open_one_process_group(tmp_path)
    end_distributed()
    assert not dist.is_initialized()
    end_distributed()  # nothing left to close: no error
