"""Memory-bank tooling beyond the model's own `compress`: streaming to disk, size estimates, summaries."""

import shutil
from pathlib import Path

import torch
from transformers.utils import logging

from .modeling import LycheeMemoryBank, LycheeMemoryForCausalLM
from .modeling.memory_bank_lychee import MemoryBankError


def bank_bytes_per_block(model: LycheeMemoryForCausalLM) -> int:
    """Bytes one block takes on disk: keys + values of every layer, plus the slot mask."""
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    slots = model.config.slots_per_block
    element = torch.finfo(model.dtype).bits // 8
    return 2 * text.num_hidden_layers * text.num_key_value_heads * slots * head_dim * element + slots


def compress_to_disk(
    model: LycheeMemoryForCausalLM,
    context_ids: torch.LongTensor,
    out_dir: str | Path,
    chunks_per_write: int = 8,
    show_progress: bool | None = None,
) -> LycheeMemoryBank:
    """Compresses a document straight into a bank folder, a few chunks at a time, so host memory stays flat.

    Args:
        model (`LycheeMemoryForCausalLM`): the model whose compressor makes the blocks.
        context_ids (`torch.LongTensor`): (N,) or (1, N) document ids.
        out_dir (`str` or `Path`): an empty (or new) folder; refused if it holds anything else.
        chunks_per_write (`int`): chunks compressed and written per step.
        show_progress (`bool`, *optional*): a progress bar over the document (default: on for 8+ chunks).

    Returns:
        `LycheeMemoryBank` reading from `out_dir`.
    """
    ids = context_ids.reshape(-1)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise MemoryBankError(f"{out_dir} is not empty: choose a new folder (nothing is overwritten).")
    check_disk_space(model, ids.numel(), out_dir)
    step = model.config.chunk_size * chunks_per_write
    starts = range(0, ids.numel(), step)
    progress = logging.tqdm(
        total=ids.numel(), desc="compressing", unit="tok", disable=not _progress(show_progress, ids.numel(), model)
    )
    bank = LycheeMemoryBank()
    for start in starts:
        part = model.compress(ids[start : start + step], show_progress=False, offload_to_cpu=True)
        bank.append(part)
        bank.save_pretrained(out_dir)
        bank = LycheeMemoryBank.from_pretrained(out_dir)  # drop the in-memory blocks: the bank now reads from disk
        progress.update(min(step, ids.numel() - start))
    progress.close()
    return bank


def check_disk_space(model: LycheeMemoryForCausalLM, num_tokens: int, out_dir: Path) -> None:
    """Refuses a document whose bank would not fit on the disk holding `out_dir`."""
    blocks = -(-num_tokens // model.config.chunk_size)
    needed = blocks * bank_bytes_per_block(model)
    existing = next((p for p in [out_dir, *out_dir.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise MemoryBankError(
            f"the bank for {num_tokens} tokens needs {needed / 2**30:.1f} GiB but {existing} has "
            f"{free / 2**30:.1f} GiB free: free space, choose another --out, or raise the compression ratio"
        )


def describe_bank(bank: LycheeMemoryBank) -> dict:
    """What `lychee-hf info` prints about a bank."""
    return {"blocks": len(bank), "tokens": bank.num_tokens, **bank.fingerprint}


def _progress(show_progress: bool | None, num_tokens: int, model: LycheeMemoryForCausalLM) -> bool:
    return show_progress if show_progress is not None else num_tokens >= 8 * model.config.chunk_size
