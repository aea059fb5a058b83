"""Loading the model a command runs, and what the commands that write a model or a bank share: the new output
folder, the main process of a multi-process launch, and saving a trained model."""

import argparse
from pathlib import Path


def load_model(args: argparse.Namespace):
    """The model and tokenizer named by `--model` (default: the embedded model), with the CLI's overrides."""
    import torch
    from transformers import AutoTokenizer

    from .. import register_auto_classes
    from ..modeling import LycheeMemoryForCausalLM

    register_auto_classes()  # the tokenizer's folder names the model classes in its config's auto_map
    if args.quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()
    if args.model:
        path = args.model
    else:
        from ..default_model import ensure_default_model
        from ..scale.distributed import distributed_state

        with distributed_state().main_process_first():  # several processes: the main one builds it once
            path = ensure_default_model(verbose=not args.quiet)
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
    dtype = getattr(torch, args.dtype) if args.dtype else "auto"
    model = LycheeMemoryForCausalLM.from_pretrained(path, dtype=dtype, **overrides)  # validated before building
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


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
