"""`lychee-hf eval`: run methods over generated or loaded tasks, resumably, and write predictions, summary, plots.

Output folder:
    predictions.jsonl  one line per (method, length, example): question, gold answers, prediction, metrics,
                       trace, costs, gate labels. Rerunning with the same folder skips the lines already there.
    predictions.part-K.jsonl  process K's lines while several processes run (merged into predictions.jsonl in
                       job order by the main process when all are done, or by the next run after an interruption)
    summary.md         mean score by length and method for every metric, naming metric, decoding and n.
    *.png              accuracy vs length; gate precision/recall (rows with supporting labels); one trace.
"""

import json
import math
from pathlib import Path

from accelerate import PartialState
from transformers import GenerationConfig

from ..data import TASKS, QAExample, load_examples, supporting_chunks
from ..metrics import METRIC_NAMES, score
from ..scale.distributed import distributed_state, process_progress
from .baselines import run_method
from .settings import EvalSettings

PREDICTIONS = "predictions.jsonl"
PART_GLOB = "predictions.part-*.jsonl"


def examples_for(settings: EvalSettings, tokenizer, length: int) -> list[QAExample]:
    return load_examples(settings.task, tokenizer, length, settings.n, settings.seed, settings.data)


def run_eval(
    model,
    tokenizer,
    settings: EvalSettings,
    out_dir: str | Path,
    show_progress: bool = True,
    state: PartialState | None = None,
) -> Path:
    """Runs every (length, method, example) not yet in `out_dir/predictions.jsonl`, then writes summary and plots.

    Run it in every process of a launch (`accelerate launch`, `torchrun`): the jobs left are split across the
    processes (`split_between_processes`), each appends its predictions to its own part file as it goes, and the
    main process merges them in job order, then writes the summary and plots. The result equals a one-process
    run's, and an interrupted run resumes with any number of processes.

    Args:
        state (`PartialState`, *optional*): the accelerate state (default: `distributed_state()`).

    Returns:
        `Path` of `summary.md`.
    """
    state = state or distributed_state()
    out_dir = Path(out_dir)
    predictions = out_dir / PREDICTIONS
    lengths = settings.lengths if settings.task in TASKS else [0]
    generation = decoding_config(model, settings)
    jobs = [
        (length, method, example)
        for length in lengths
        for example in examples_for(settings, tokenizer, length)
        for method in settings.methods
    ]
    order = {(method, length, example.id): i for i, (length, method, example) in enumerate(jobs)}
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        merge_parts(out_dir, order)  # an interrupted multi-process run's lines count as done
    state.wait_for_everyone()
    done = {(r["method"], r["length"], r["id"]) for r in read_predictions(predictions)}
    todo = [job for job in jobs if (job[1], job[0], job[2].id) not in done]
    sink_path = predictions if state.num_processes == 1 else out_dir / f"predictions.part-{state.process_index}.jsonl"
    with state.split_between_processes(todo) as mine, open(sink_path, "a", encoding="utf-8") as sink:
        progress = process_progress(state, len(mine), "evaluating", "answer", show_progress)
        for length, method, example in mine:
            record = evaluate_one(model, tokenizer, method, example, length, generation, settings)
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            progress.update(1)
        progress.close()
    state.wait_for_everyone()
    summary = out_dir / "summary.md"
    if state.is_main_process:
        merge_parts(out_dir, order)
        rows = read_predictions(predictions)
        summary.write_text(render_summary(rows, settings, generation))
        from .plots import write_plots

        write_plots(rows, out_dir)
    state.wait_for_everyone()
    return summary


def merge_parts(out_dir: Path, order: dict[tuple, int]) -> int:
    """Appends the lines of every `predictions.part-*.jsonl` to `predictions.jsonl`, in job order (`order`: (method,
    length, id) -> index; unknown jobs last), skipping lines already there, then deletes the parts.

    A part's last line cut short by an interruption is dropped (its job runs again). Returns the lines added.
    """
    parts = sorted(out_dir.glob(PART_GLOB))
    if not parts:
        return 0
    predictions = out_dir / PREDICTIONS
    done = {(r["method"], r["length"], r["id"]) for r in read_predictions(predictions)}
    rows = {}
    for part in parts:
        for row in read_predictions(part, tolerate_cut_end=True):
            key = (row["method"], row["length"], row["id"])
            if key not in done:
                rows.setdefault(key, row)
    with open(predictions, "a", encoding="utf-8") as sink:
        for key in sorted(rows, key=lambda k: order.get(k, len(order))):
            sink.write(json.dumps(rows[key], ensure_ascii=False) + "\n")
        sink.flush()
    for part in parts:
        part.unlink()
    return len(rows)


def decoding_config(model, settings: EvalSettings) -> GenerationConfig:
    """Greedy decoding of the answer, `max_new_tokens` from the settings or the model's `max_answer_tokens`."""
    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.do_sample = False
    config.max_new_tokens = settings.max_new_tokens or model.config.max_answer_tokens
    return config


def evaluate_one(model, tokenizer, method: str, example: QAExample, length: int, generation, settings) -> dict:
    result = run_method(
        method,
        model,
        tokenizer,
        example,
        generation_config=generation,
        memagent_chunk_tokens=settings.memagent_chunk_tokens,
        bank_dtype=settings.bank_dtype,
    )
    record = {
        "method": method,
        "length": length,
        "id": example.id,
        "task": example.task,
        "length_tokens": example.length_tokens,
        "question": example.question,
        "answers": example.answers,
        "prediction": result.prediction,
        "metrics": score(result.prediction, example.answers),
        "stats": result.stats,
        "trace": result.trace,
    }
    if "family" in example.meta:  # fact families: held-out families are reported apart (render_summary)
        record["family"] = example.meta["family"]
    if example.supporting and result.trace and "span" in result.trace[0]:
        chunk = result.trace[0]["span"][1] - result.trace[0]["span"][0]
        record["gold_chunks"] = supporting_chunks(example, tokenizer, chunk)
    return record


def read_predictions(path: Path, tolerate_cut_end: bool = False) -> list[dict]:
    """The rows of a predictions file; with `tolerate_cut_end`, a last line cut short by an interruption is
    dropped instead of refused."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if tolerate_cut_end and number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg}): fix or delete that line") from error
    return rows


def _mean_cell(values: list[float]) -> str:
    """`mean ± half-width (n=k)`: the 95% normal-approximation interval of the mean; `-` for no values."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.3f} (n=1)"
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    half_width = 1.96 * math.sqrt(variance / len(values))
    return f"{mean:.3f} ± {half_width:.3f} (n={len(values)})"


def _family_table(rows: list[dict], methods: list[str], lengths: list[int]) -> list[str]:
    """Markdown lines: sub-EM per fact family (rows of the fact-family tasks only), by length and method."""
    families = sorted({r["family"] for r in rows if r.get("family")})
    if not families:
        return []
    lines = [
        "## sub-EM by fact family",
        "",
        "| length | family | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for length in lengths:
        for family in families:
            cells = []
            for method in methods:
                values = [
                    r["metrics"]["sub_em"]
                    for r in rows
                    if r["method"] == method and r["length"] == length and r.get("family") == family
                ]
                cells.append(_mean_cell(values))
            lines.append(f"| {length} | {family} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _gate_table(rows: list[dict], methods: list[str], lengths: list[int]) -> list[str]:
    """Markdown lines: the gate's precision / recall / F1 of kept blocks against the gold-fact chunks (rows with
    supporting labels only), mean per row, by length and method; nothing when no row has labels."""
    from .plots import gate_precision_recall

    cells = []
    for length in lengths:
        for method in [m for m in methods if m.startswith("lychee")]:  # the other methods read every chunk
            scored = [gate_precision_recall(r) for r in rows if r["method"] == method and r["length"] == length]
            scored = [pr for pr in scored if pr is not None]
            if scored:
                f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in scored]
                means = [sum(v) / len(v) for v in (list(zip(*scored))[0], list(zip(*scored))[1], f1)]
                cells.append(
                    f"| {length or 'data'} | {method} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {len(f1)} |"
                )
    if not cells:
        return []
    return [
        "## Gate: kept blocks vs the chunks holding gold facts (mean per answer)",
        "",
        "| length | method | precision | recall | F1 | n |",
        "|---|---|---|---|---|---|",
        *cells,
        "",
    ]


def _cost_table(rows: list[dict], methods: list[str], lengths: list[int]) -> list[str]:
    """Markdown lines: mean cost per answer, with the seconds a question takes once its document's bank exists."""
    lines = [
        "## Cost (mean per answer)",
        "",
        "`from bank`: seconds less the document's compression, what each further question over the same document "
        "costs (methods without a bank pay their whole time on every question).",
        "",
        "| length | method | seconds | from bank | prefill tokens | decode tokens | steps | truncated tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ("seconds", "compress_seconds", "prefill_tokens", "decode_tokens", "steps", "truncated_tokens")
    for length in lengths:
        for method in methods:
            stats = [r["stats"] for r in rows if r["method"] == method and r["length"] == length]
            if stats:
                mean = {k: sum(s.get(k, 0) for s in stats) / len(stats) for k in keys}
                lines.append(
                    f"| {length or 'data'} | {method} | {mean['seconds']:.2f} | "
                    f"{mean['seconds'] - mean['compress_seconds']:.2f} | {mean['prefill_tokens']:.0f} | "
                    f"{mean['decode_tokens']:.0f} | {mean['steps']:.1f} | {mean['truncated_tokens']:.0f} |"
                )
    return lines


def render_summary(rows: list[dict], settings: EvalSettings, generation: GenerationConfig) -> str:
    """Markdown: one table per metric (mean over examples, by length and method), with n and decoding."""
    methods = [m for m in settings.methods if any(r["method"] == m for r in rows)]
    lengths = sorted({r["length"] for r in rows})
    decoding = f"greedy, max_new_tokens={generation.max_new_tokens}"
    lines = [
        f"# Evaluation: task `{settings.task}`",
        "",
        f"Decoding: {decoding}. Scores are means over n examples per cell, after SQuAD-style normalisation.",
        "",
    ]
    for metric, title in METRIC_NAMES.items():
        lines += [f"## {title}", "", "| length | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for length in lengths:
            cells = []
            for method in methods:
                values = [r["metrics"][metric] for r in rows if r["method"] == method and r["length"] == length]
                cells.append(_mean_cell(values))
            lines.append(f"| {length or 'data'} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _family_table(rows, methods, lengths)
    lines += _gate_table(rows, methods, lengths)
    lines += _cost_table(rows, methods, lengths)
    return "\n".join(lines) + "\n"
