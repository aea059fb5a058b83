"""Loading the model a command runs, and what the commands that write a model or a bank share: the new output
folder, the main process of a multi-process launch, and saving a trained model."""

import argparse
from pathlib import Path


def model_overrides(args: argparse.Namespace) -> dict:
    """The config fields the command line changes: `--ratio`, `--chunk-size`, `--memory-budget`."""
    overrides = {}
    ratio, chunk_size = getattr(args, "ratio", None), getattr(args, "chunk_size", None)
    if ratio is not None:
        overrides["compression_mode"] = "lossless" if ratio == 0 else "memory_tokens"
        if ratio:
            overrides["compression_ratio"] = ratio
    if chunk_size is not None:
        overrides["chunk_size"] = chunk_size
        overrides["compression_window"] = chunk_size
    if getattr(args, "memory_budget", None) is not None:
        overrides["memory_budget"] = args.memory_budget
    return overrides


def load_model(args: argparse.Namespace, state=None):
    """The model and tokenizer named by `--model` (default: the embedded model), with the CLI's overrides; with
    an accelerate `state`, loaded by the main process first and placed on this process's device."""
    from ..loading import load_pretrained

    return load_pretrained(args.model, args.dtype, args.quiet, model_overrides(args), state)


def encode(tokenizer, text: str, source: str):
    import torch

    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"context {source} is empty after tokenization")
    return torch.tensor([ids])


def new_folder(path: str, what: str) -> Path:
    """`path` as a folder to write `what` into: refused if it already holds anything (nothing is overwritten).

    Under several processes, every process checks before any of them writes into it."""
    from ..scale.distributed import distributed_state

    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new folder for {what} (nothing is overwritten)")
    distributed_state().wait_for_everyone()
    return out


def training_folder(args) -> Path:
    """`--out` of a training command: a new folder, or with `--resume` the folder of the interrupted run."""
    if not args.resume:
        return new_folder(args.out, "the trained model")
    out = Path(args.out)
    if not out.is_dir():
        raise FileNotFoundError(f"nothing to resume: {out} does not exist (drop --resume to start a new run there)")
    return out


def start_training(args, out: Path, output_dir: str) -> tuple[str | None, list[dict]]:
    """The checkpoint this run resumes from (`None` without `--resume`) and every start of the run in `out`,
    this one appended to `OUT/training_runs.json` before training (so an interrupted run is recorded too): the
    provenance across resumptions."""
    import datetime
    import json
    import sys

    from ..training.trainer_utils import checkpoint_to_resume

    checkpoint = checkpoint_to_resume(output_dir, args.resume)

    path = out / "training_runs.json"
    runs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    runs.append(
        {
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "resumed_from": checkpoint,
            "command": ["lychee-hf", *sys.argv[1:]],
        }
    )
    if main_process():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return checkpoint, runs


def main_process() -> bool:
    from ..scale.distributed import distributed_state

    return distributed_state().is_main_process


def save_trained(model, tokenizer, out: Path) -> None:
    """Writes a trained model and its tokenizer to `out`, dropping the Trainer's output_dir if it stayed empty."""
    trainer_dir = out / "trainer"  # save_strategy="no" leaves it empty
    if trainer_dir.is_dir() and not any(trainer_dir.iterdir()):
        trainer_dir.rmdir()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
