"""Hub model cards for lychee-hf checkpoints, rendered from `model_cards/lychee_memory.md`."""

import json
import os
from importlib import resources
from pathlib import Path
from string import Template

from .modeling import LycheeMemoryConfig

# The card's Limitations when the training record has no `limitations` of its own (or there is no record).
GENERAL_LIMITATIONS = (
    "Accuracy is known only where the Evaluation section above gives it; without one, treat this checkpoint as "
    "unmeasured.",
    "The answer comes from a short working memory rewritten block by block. Questions that combine facts from "
    "several blocks (multi-hop) are much harder than single facts, and a chain whose answer is stated before the fact "
    "that leads to it cannot be followed by one in-order scan of the blocks.",
    "Compressed blocks (memory tokens) keep less than lossless blocks; how much depends on how the compressor was "
    "trained.",
    "A bank (a compressed document) works only with the model that wrote it (checked by its fingerprint): after "
    "retraining the compressor, or quantizing the model, compress the documents again.",
    "The backbone's limits (languages, knowledge, biases) carry over, and a wrong answer can read as fluently as a "
    "right one: check answers against the blocks the trace says were read.",
)
# Keys of a training record that are not a training stage (the rest become rows of the Training table).
_RECORD_HEADER_KEYS = ("date", "machine", "reproduce", "notes", "invocations", "limitations")


def render_model_card(
    config: LycheeMemoryConfig,
    base_model: str | None = None,
    repo_id: str = "path/to/checkpoint",
    license: str = "apache-2.0",
    title: str | None = None,
    evaluation: list[dict] | None = None,
    training: dict | str | os.PathLike | None = None,
) -> str:
    """The README.md of a checkpoint: YAML front matter, usage, the method, the settings, evaluation, training and
    limitations.

    Args:
        config (`LycheeMemoryConfig`): the checkpoint's config.
        base_model (`str`, *optional*): Hub id of the backbone (YAML `base_model`).
        repo_id (`str`): where the checkpoint is (or will be) published, used in the usage snippets.
        license (`str`): YAML license id.
        title (`str`, *optional*): the card's heading (default: the repo name).
        evaluation (`list[dict]`, *optional*): rows of an evaluation table (same keys in every row).
        training (`dict`, `str` or `os.PathLike`, *optional*): the checkpoint's training record, as written by
            `examples/train_default_model.py` (`training.json`): the record itself, its file, or the checkpoint
            folder holding it. A path that does not exist counts as no record.

    Returns:
        `str`: Markdown.
    """
    record = load_training_record(training)
    template = Template(resources.files("lychee_hf.model_cards").joinpath("lychee_memory.md").read_text())
    text = config.text_config
    values = {
        key: getattr(config, key)
        for key in (
            "chunk_size",
            "compression_mode",
            "compression_window",
            "compression_ratio",
            "memory_token_placement",
            "memory_budget",
            "position_scheme",
        )
    }
    return template.substitute(
        values,
        base_model=base_model or "unknown",
        license=license,
        repo_id=repo_id,
        title=title or repo_id.split("/")[-1],
        backbone=f"{text.model_type}, {text.num_hidden_layers} layers, hidden {text.hidden_size}",
        evaluation=_evaluation_table(evaluation),
        training=_training_section(record),
        limitations=_limitations_section(record),
        role_adapters=", ".join(config.role_adapters or []) or "none",
        gate=gate_description(config),
    )


def gate_description(config: LycheeMemoryConfig) -> str:
    """The card's gate row: type, threshold and the policy settings that differ from the defaults."""
    details = [f"threshold {config.gate_threshold}"]
    if config.gate_type == "query_likelihood" and config.gate_reads_memory:
        details.append("reads the working memory")
    if config.gate_max_blocks is not None:
        details.append(f"at most {config.gate_max_blocks} blocks")
    if config.gate_keep_last:
        details.append("always reads the last block")
    if config.gate_revisit:
        details.append("second look at skipped blocks")
    return f"{config.gate_type} ({', '.join(details)})"


def _evaluation_table(rows: list[dict] | None) -> str:
    if not rows:
        return "## Evaluation\n\nNo evaluation was given for this checkpoint."
    columns = list(rows[0])
    lines = ["## Evaluation", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def load_training_record(training: dict | str | os.PathLike | None) -> dict | None:
    """The training record `training` names (see `render_model_card`), or None when there is none."""
    if training is None or isinstance(training, dict):
        return training
    path = Path(training)
    if path.is_dir():
        path = path / "training.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _training_section(record: dict | None) -> str:
    if not record:
        return (
            "## Training\n\nNo training record: this checkpoint has no `training.json`, so this card cannot say how "
            "its weights were trained."
        )
    made = ", ".join(str(record[key]) for key in ("date", "machine") if record.get(key))
    lines = ["## Training", "", f"From the checkpoint's `training.json`{f' ({made})' if made else ''}.", ""]
    stages = [(key, value) for key, value in record.items() if key not in _RECORD_HEADER_KEYS]
    if stages:
        lines += ["| stage | record |", "|---|---|"]
        lines += [f"| {key.replace('_', ' ')} | {_cell(_describe(value))} |" for key, value in stages]
        lines.append("")
    if record.get("reproduce"):
        lines += ["Reproduce:", "", "```bash", str(record["reproduce"]), "```", ""]
    if record.get("notes"):
        lines += [f"Notes: {record['notes']}", ""]
    return "\n".join(lines).rstrip()


def _limitations_section(record: dict | None) -> str:
    own = (record or {}).get("limitations")
    items = [own] if isinstance(own, str) else list(own or GENERAL_LIMITATIONS)
    return "\n".join(["## Limitations", "", *(f"- {item}" for item in items)])


def _describe(value, nested: bool = False) -> str:
    """A record's value on one line: `key: value` pairs for a mapping (a nested one in brackets), numbers rounded."""
    if isinstance(value, dict):
        pairs = [f"{key.replace('_', ' ')}: {_describe(item, nested=True)}" for key, item in value.items()]
        return f"({', '.join(pairs)})" if nested else "; ".join(pairs)
    if isinstance(value, list):
        return "[" + ", ".join(_describe(item, nested=True) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
