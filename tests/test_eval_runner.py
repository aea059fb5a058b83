import json

import pytest

from lychee_hf.data import make_niah
from lychee_hf.eval.baselines import METHODS, configured, run_method
from lychee_hf.eval.plots import gate_precision_recall
from lychee_hf.eval.runner import EvalSettings, render_summary, run_eval
from lychee_hf.testing import run_cli, tiny_lychee


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=4, memory_budget=8)


@pytest.fixture(scope="module")
def example(tokenizer):
    return make_niah(tokenizer, 300, 1, seed=3)[0]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_answers_end_to_end(model, tokenizer, example, method):
    result = run_method(method, model, tokenizer, example, memagent_chunk_tokens=128)
    assert isinstance(result.prediction, str)
    assert result.stats["prefill_tokens"] > 0 and result.stats["decode_tokens"] > 0 and result.stats["seconds"] > 0
    if method == "full":
        assert result.trace == [] and result.stats["truncated_tokens"] == 0
    else:
        assert result.trace and all("memory" in step and "kept" in step for step in result.trace)


def test_memagent_reads_raw_chunks_and_lychee_lossless_reads_blocks_of_the_same_text(model, tokenizer, example):
    agent = run_method("memagent", model, tokenizer, example, memagent_chunk_tokens=64)
    with configured(model, chunk_size=64):
        lossless = run_method("lychee-lossless", model, tokenizer, example)
    # Same chunks, same templates, sequential positions: the text loop and the lossless blocks agree.
    assert [s["memory"] for s in agent.trace] == [s["memory"] for s in lossless.trace]
    assert agent.prediction == lossless.prediction
    assert agent.stats["prefill_tokens"] > lossless.stats["prefill_tokens"]  # MemAgent re-reads every chunk as text


def test_full_context_reports_truncation(tokenizer):
    small = tiny_lychee(max_answer_tokens=4, memory_budget=8)
    small.config.text_config.max_position_embeddings = 1024  # a window smaller than the context
    long_example = make_niah(tokenizer, 1500, 1, seed=4)[0]
    result = run_method("full", small, tokenizer, long_example)
    assert result.stats["truncated_tokens"] > 0


def test_configured_restores_settings_and_gate(model):
    gate, mode = model.gate, model.config.compression_mode
    with configured(model, compression_mode="lossless", gate_type="query_likelihood"):
        assert model.config.compression_mode == "lossless" and model.gate is not gate
    assert model.config.compression_mode == mode and model.gate is gate


def test_runner_writes_predictions_summary_and_plots_and_resumes(model, tokenizer, tmp_path):
    settings = EvalSettings(
        task="niah", lengths=[200, 400], n=2, methods=["lychee", "memagent", "full"], memagent_chunk_tokens=128
    )
    summary = run_eval(model, tokenizer, settings, tmp_path, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 3
    assert {"method", "length", "question", "answers", "prediction", "metrics", "trace", "stats"} <= set(rows[0])
    text = summary.read_text()
    assert "substring match (sub-EM)" in text and "exact match" in text and "token F1" in text
    assert "greedy, max_new_tokens=4" in text and "(n=2)" in text
    assert (tmp_path / "accuracy_vs_length.png").stat().st_size > 0
    assert (tmp_path / "trace_example.png").stat().st_size > 0
    assert (tmp_path / "gate_precision_recall.png").stat().st_size > 0
    run_eval(model, tokenizer, settings, tmp_path, show_progress=False)  # resumes: nothing left to do
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 12


def test_gate_precision_recall_against_gold_chunks():
    row = {"gold_chunks": [1, 3], "trace": [{"step": i, "kept": i in (1, 2)} for i in range(4)]}
    assert gate_precision_recall(row) == (0.5, 0.5)
    assert gate_precision_recall({"gold_chunks": [], "trace": []}) is None
    # Traces name the index `block` now (as `lychee-hf ask --json` does); `step` is what older files hold.
    renamed = {"gold_chunks": [1, 3], "trace": [{"block": i, "kept": i in (1, 2)} for i in range(4)]}
    assert gate_precision_recall(renamed) == (0.5, 0.5)


def test_lychee_and_memagent_traces_use_the_cli_field_names(model, tokenizer, example):
    for method in ("lychee", "memagent"):
        trace = run_method(method, model, tokenizer, example, memagent_chunk_tokens=128).trace
        assert [step["block"] for step in trace] == list(range(len(trace)))
        assert all({"tokens_decoded", "prompt_tokens", "memory_tokens", "gate_decision"} <= set(step) for step in trace)


def test_unknown_method_or_missing_data_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        EvalSettings(task="niah", methods=["magic"])
    with pytest.raises(ValueError, match="--data"):
        EvalSettings(task="jsonl")


def test_cli_eval_on_a_jsonl_file(tmp_path, tokenizer):
    model = tiny_lychee(max_answer_tokens=4, memory_budget=8)
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    data = tmp_path / "data.jsonl"
    rows = [
        {"context": "Alice was born in Paris. " * 30, "question": "Where was Alice born?", "answer": "Paris"},
        {
            "context": "Bob lives in Rome. " * 30,
            "extra_info": {"question": "Where does Bob live?"},
            "answers": ["Rome"],
        },
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, stdout, err = run_cli(
        "eval", "--model", tmp_path / "ckpt", "--task", "jsonl", "--data", data, "--method", "lychee,full",
        "--out", tmp_path / "out", "--quiet",
    )  # fmt: skip
    assert code == 0, err[-2000:]
    assert "| data |" in stdout
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 4


def test_summary_reports_fact_families_apart_with_95_percent_intervals():
    from transformers import GenerationConfig

    def row(family, sub_em):
        metrics = {"em": 0.0, "sub_em": sub_em, "f1": 0.0}
        return {"method": "lychee", "length": 2000, "family": family, "metrics": metrics, "stats": {}}

    rows = [row("colour", 1.0), row("colour", 0.0), row("spouse", 1.0), row("spouse", 1.0)]
    settings = EvalSettings(task="facts-heldout", lengths=[2000], methods=["lychee"])
    text = render_summary(rows, settings, GenerationConfig(max_new_tokens=8))
    # sub-EM over the four rows: mean 0.75, sample std 0.5, half-width 1.96 * 0.5 / 2 = 0.49
    assert "| 2000 | 0.750 ± 0.490 (n=4) |" in text
    assert "## sub-EM by fact family" in text
    assert "| 2000 | colour | 0.500 ± 0.980 (n=2) |" in text and "| 2000 | spouse | 1.000 ± 0.000 (n=2) |" in text


def test_summary_reports_seconds_from_a_prebuilt_bank_apart_from_compression():
    from transformers import GenerationConfig

    def row(method, seconds, compress_seconds):
        metrics = {"em": 0.0, "sub_em": 1.0, "f1": 0.0}
        stats = {"seconds": seconds, "compress_seconds": compress_seconds, "steps": 1}
        return {"method": method, "length": 2000, "metrics": metrics, "stats": stats}

    rows = [row("lychee", 7.0, 4.0), row("lychee", 9.0, 4.0), row("memagent", 8.0, 0.0)]
    settings = EvalSettings(task="facts-heldout", lengths=[2000], methods=["lychee", "memagent"])
    text = render_summary(rows, settings, GenerationConfig(max_new_tokens=8))
    assert "| 2000 | lychee | 8.00 | 4.00 |" in text  # 8 s a question, 4 s of it compressing the document
    assert "| 2000 | memagent | 8.00 | 8.00 |" in text
