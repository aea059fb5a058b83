"""`lychee-hf info`: print the settings of a checkpoint or a memory bank."""

import argparse
import json
from pathlib import Path

from .arguments import add_command

NAME = "info"
EXAMPLES = """examples:
  lychee-hf info                      # the embedded default model (built into your cache on first use)
  lychee-hf info bank/
  lychee-hf info ./LycheeMemory-7B-hf"""


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands,
        NAME,
        "print the settings of a checkpoint or a memory bank",
        EXAMPLES,
        "Print what a LycheeMemory checkpoint folder (config.json) or a memory bank folder (bank.json) holds: "
        "backbone, block settings, gate, role adapters; for a bank its blocks, tokens, size and the model "
        "fingerprint it needs. Only the settings that apply to the block kind (lossless or memory tokens) are shown.",
    )
    parser.add_argument("path", nargs="?", help="a checkpoint folder or a bank folder (default: the embedded model)")
    parser.add_argument("--default", action="store_true", help="the embedded default model (the same as no path)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.default and args.path:
        raise ValueError("give a path or --default, not both")
    if args.path:
        path = Path(args.path)
    else:
        from ..default_model import ensure_default_model

        path = Path(ensure_default_model(verbose=True))
        print(f"{'path':<20}  {path}")
    if (path / "bank.json").is_file():
        from ..bank_tools import describe_bank
        from ..modeling import LycheeMemoryBank

        summary = {  # every block is read and checksummed: a damaged bank is an error here, not a surprise later
            "kind": "memory bank",
            **describe_bank(LycheeMemoryBank.from_pretrained(path), verify=True),
            "size_mib": round(_folder_size(path) / 2**20, 2),
        }
    elif (path / "config.json").is_file():
        summary = {"kind": "checkpoint", **_checkpoint_summary(path)}
    else:
        raise FileNotFoundError(f"{path} is neither a checkpoint (config.json) nor a memory bank (bank.json)")
    summary = _applicable_settings(summary)
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return 0


# Settings that only describe memory-token compression: a lossless block is the chunk's own K/V.
MEMORY_TOKEN_SETTINGS = ("compression_ratio", "compression_window", "memory_token_placement")


def _applicable_settings(summary: dict) -> dict:
    if summary.get("compression_mode") != "lossless":
        return summary
    return {key: value for key, value in summary.items() if key not in MEMORY_TOKEN_SETTINGS}


def _checkpoint_summary(path: Path) -> dict:
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}): restore the checkpoint's config.json") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a {type(config).__name__}, not a JSON object: restore the checkpoint")
    if config.get("model_type") != "lychee_memory":
        raise ValueError(f"{path} is a {config.get('model_type')!r} checkpoint, not a LycheeMemory one")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    keys = [
        "compression_mode",
        "chunk_size",
        "compression_window",
        "compression_ratio",
        "memory_token_placement",
        "memory_budget",
        "max_answer_tokens",
        "position_scheme",
        "gate_type",
        "gate_threshold",
        "gate_reads_memory",
        "gate_revisit",
        "role_adapters",
    ]
    return {
        "backbone": f"{text.get('model_type')} ({text.get('num_hidden_layers')} layers, "
        f"hidden {text.get('hidden_size')})",
        "dtype": config.get("dtype") or text.get("dtype"),
        **{key: config.get(key) for key in keys},
    }


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
