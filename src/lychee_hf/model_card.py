"""Hub model cards for lychee-hf checkpoints, rendered from `model_cards/lychee_memory.md`."""

from importlib import resources
from string import Template

from .modeling import LycheeMemoryConfig


def render_model_card(
    config: LycheeMemoryConfig,
    base_model: str | None = None,
    repo_id: str = "path/to/checkpoint",
    license: str = "apache-2.0",
    title: str | None = None,
    evaluation: list[dict] | None = None,
) -> str:
    """The README.md of a checkpoint: YAML front matter, usage, the method, the settings and evaluation.

    Args:
        config (`LycheeMemoryConfig`): the checkpoint's config.
        base_model (`str`, *optional*): Hub id of the backbone (YAML `base_model`).
        repo_id (`str`): where the checkpoint is (or will be) published, used in the usage snippets.
        license (`str`): YAML license id.
        title (`str`, *optional*): the card's heading (default: the repo name).
        evaluation (`list[dict]`, *optional*): rows of an evaluation table (same keys in every row).

    Returns:
        `str`: Markdown.
    """
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
