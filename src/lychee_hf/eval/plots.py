"""PNG plots of an evaluation folder (matplotlib, Agg backend; skipped with a notice when it is missing)."""

import sys
from pathlib import Path


def write_plots(rows: list[dict], out_dir: Path) -> list[Path]:
    """Accuracy vs length, gate precision/recall (rows with gold chunks), and one example's per-block trace."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            f"lychee-hf: no plots in {out_dir}: they need matplotlib (pip install 'lychee-hf[eval]'); "
            "predictions.jsonl and summary.md are complete",
            file=sys.stderr,
        )
        return []
    written = [_accuracy_vs_length(rows, out_dir, plt)]
    gate = _gate_precision_recall(rows, out_dir, plt)
    trace = _trace_of_one_example(rows, out_dir, plt)
    return [path for path in (*written, gate, trace) if path is not None]


def gate_precision_recall(row: dict) -> tuple[float, float] | None:
    """Precision and recall of the blocks a row kept against the chunks holding its gold facts."""
    gold = set(row.get("gold_chunks") or [])
    if not gold or not row["trace"]:
        return None
    kept = {block_index(step) for step in row["trace"] if step["kept"]}
    hits = len(kept & gold)
    return (hits / len(kept) if kept else 0.0), hits / len(gold)


def block_index(step: dict) -> int:
    """A trace entry's block (or raw chunk) index: `block`, as `LycheeBlockTrace.to_dict` and `lychee-hf ask --json`
    name it; predictions files written before that named it `step`."""
    return step["block"] if "block" in step else step["step"]


def _accuracy_vs_length(rows, out_dir, plt) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    lengths = sorted({r["length"] for r in rows})
    # One length (or a data file, length 0) is one point per method: categories read better than a log axis.
    categorical = len(lengths) == 1 or not all(lengths)
    for method in sorted({r["method"] for r in rows}):
        method_lengths = sorted({r["length"] for r in rows if r["method"] == method})
        means = [
            _mean([r["metrics"]["sub_em"] for r in rows if r["method"] == method and r["length"] == n])
            for n in method_lengths
        ]
        xs = [lengths.index(n) for n in method_lengths] if categorical else method_lengths
        axis.plot(xs, means, marker="o", label=method)
    if categorical:
        axis.set_xticks(range(len(lengths)), [_length_label(n) for n in lengths])
        axis.set_xlim(-0.5, len(lengths) - 0.5)
    else:
        axis.set_xscale("log")
        axis.set_xticks(lengths, [_length_label(n) for n in lengths])
        axis.minorticks_off()
    axis.set(
        xlabel="context length (tokens)",
        ylabel="substring match (sub-EM, 0-1)",
        ylim=(-0.02, 1.02),
        title="Answer accuracy by context length",
    )
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axis.grid(alpha=0.3)
    return _save(figure, out_dir / "accuracy_vs_length.png", plt)


def _length_label(tokens: int) -> str:
    if not tokens:
        return "your data"
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def _gate_precision_recall(rows, out_dir, plt) -> Path | None:
    scored = [(r["method"], gate_precision_recall(r)) for r in rows]
    scored = [(method, pr) for method, pr in scored if pr is not None and method.startswith("lychee")]
    if not scored:
        return None
    methods = sorted({method for method, _ in scored})
    precision = [_mean([pr[0] for m, pr in scored if m == method]) for method in methods]
    recall = [_mean([pr[1] for m, pr in scored if m == method]) for method in methods]
    figure, axis = plt.subplots(figsize=(6, 4))
    positions = range(len(methods))
    axis.bar([p - 0.2 for p in positions], precision, width=0.4, label="precision")
    axis.bar([p + 0.2 for p in positions], recall, width=0.4, label="recall")
    axis.set_xticks(list(positions), methods, rotation=20)
    axis.set(
        ylabel="share (0-1)",
        ylim=(0, 1.05),
        title="Gate: kept blocks vs chunks holding gold facts",
    )
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, out_dir / "gate_precision_recall.png", plt)


def _trace_of_one_example(rows, out_dir, plt) -> Path | None:
    row = next((r for r in rows if r["method"].startswith("lychee") and r["trace"]), None)
    if row is None:
        return None
    steps = [block_index(s) for s in row["trace"]]
    figure, axis = plt.subplots(figsize=(9, 4))
    colours = ["tab:green" if s["kept"] else "tab:grey" for s in row["trace"]]
    axis.bar(steps, [s["gate_score"] for s in row["trace"]], color=colours, label="gate score (green: kept)")
    for gold in row.get("gold_chunks") or []:
        axis.axvline(gold, color="tab:red", linestyle="--", linewidth=1)
    memory = axis.twinx()
    memory.plot(steps, [s["memory_tokens"] for s in row["trace"]], color="tab:blue", marker=".", label="memory tokens")
    axis.set(
        xlabel="block (red: holds a gold fact)",
        ylabel="gate score",
        ylim=(0, 1.05),
    )
    question = row["question"] if len(row["question"]) <= 70 else row["question"][:67] + "..."
    axis.set_title(f"One answer's blocks ({row['method']}): {question}", fontsize=10)
    memory.set_ylabel("working memory (tokens)")
    memory.set_ylim(bottom=0)
    handles = axis.get_legend_handles_labels()[0] + memory.get_legend_handles_labels()[0]
    axis.legend(handles, [h.get_label() for h in handles], loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False)
    return _save(figure, out_dir / "trace_example.png", plt)


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
