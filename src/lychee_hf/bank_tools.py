"""Memory-bank tooling beyond the model's own `compress`: streaming to disk (resumable), size estimates, format
conversion, summaries."""

import hashlib
import shutil
import tempfile
from pathlib import Path

import torch
from transformers.utils import logging

from .modeling import (
    BANK_FILE_PATTERN,
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_NAME,
    DocumentText,
    LycheeMemoryBank,
    LycheeMemoryForCausalLM,
    MemoryBankError,
    StorageFormat,
    backbone_head_dim,
    check_bank_dtype,
    default_bank_dtype,
    kv_nbytes,
    start_bank,
    wants_progress,
)


def bank_block_shape(model: LycheeMemoryForCausalLM) -> tuple[int, int, int, int]:
    """(layers, kv_heads, slots, head_dim) of one block made by `model`."""
    text = model.config.text_config
    return (text.num_hidden_layers, text.num_key_value_heads, model.config.slots_per_block, backbone_head_dim(text))


def bank_bytes_per_block(model: LycheeMemoryForCausalLM, bank_dtype: str | None = None) -> int:
    """Bytes one block takes on disk in format `bank_dtype` (default: the default format for the model's dtype):
    keys + values of every layer (with their scales for int8/int4), plus the slot mask."""
    shape = bank_block_shape(model)
    return kv_nbytes(shape, bank_dtype or default_bank_dtype(model.dtype)) + shape[2]


def document_record(ids: torch.LongTensor) -> dict:
    """What a bank records of the whole document it is made from: its length and a SHA-256 of its token ids."""
    data = ids.reshape(-1).to(device="cpu", dtype=torch.int64).contiguous().numpy()
    return {"num_tokens": int(ids.numel()), "sha256": hashlib.sha256(data).hexdigest()}


def compress_to_disk(
    model: LycheeMemoryForCausalLM,
    context_ids: torch.LongTensor,
    out_dir: str | Path,
    chunks_per_write: int = 8,
    show_progress: bool | None = None,
    bank_dtype: str | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_BYTES,
    resume: bool = False,
    overwrite: bool = False,
    text: DocumentText | None = None,
) -> LycheeMemoryBank:
    """Compresses a document straight into a bank folder, a few chunks at a time, so host memory stays flat.

    The folder is marked unfinished from the start and complete only when the last block is written: a bank cut
    short (interrupt, full disk) is refused by readers, and `resume=True` continues it where it stopped.

    Args:
        model (`LycheeMemoryForCausalLM`): the model whose compressor makes the blocks.
        context_ids (`torch.LongTensor`): (N,) or (1, N) document ids.
        out_dir (`str` or `Path`): an empty (or new) folder; one holding anything else is refused unless
            `resume` or `overwrite` says what to do with it.
        chunks_per_write (`int`): chunks compressed per step.
        show_progress (`bool`, *optional*): a progress bar over the document (default: on for 8+ chunks).
        bank_dtype (`str`, *optional*): storage format (default: float16 for float32 models, else the model's
            dtype; when resuming, the bank's own).
        max_shard_size (`int`): bytes per shard file at most; each step of `chunks_per_write` chunks is written
            (and recorded in the manifest) before the next, so an interruption loses at most one step.
        resume (`bool`): continue the unfinished bank in `out_dir` (same model, same document); a new or empty
            folder starts from scratch; a complete bank of this document is returned as it is.
        overwrite (`bool`): replace the bank in `out_dir` (only bank files are removed; other files stay).
        text (`DocumentText`, *optional*): the document's text and per-chunk characters
            (`lychee_hf.text_banks.encode_document`), kept beside the bank so answers quote evidence.

    Returns:
        `LycheeMemoryBank` reading from `out_dir`.
    """
    if resume and overwrite:
        raise ValueError("Pass resume (continue the bank) or overwrite (replace it), not both.")
    ids = context_ids.reshape(-1)
    out_dir = Path(out_dir)
    document = document_record(ids)
    fingerprint = model.memory_fingerprint()
    bank = _resumable_bank(out_dir, fingerprint, document, bank_dtype) if resume else None
    if bank is None:
        _clear_for_new_bank(out_dir, overwrite)
        bank_dtype = check_bank_dtype(bank_dtype or default_bank_dtype(model.dtype))
    start, total = bank.num_tokens if bank is not None else 0, ids.numel()
    check_disk_space(model, total - start, out_dir, bank_dtype or bank.bank_dtype)
    if bank is None:
        # unfinished until the last block is written
        start_bank(out_dir, fingerprint, StorageFormat.for_dtype(bank_dtype), document, text)
    bank = LycheeMemoryBank.from_pretrained(out_dir, allow_incomplete=True)
    if start == total:
        bank.save_pretrained(out_dir, complete=True)  # all blocks were written before the interruption
        return LycheeMemoryBank.from_pretrained(out_dir)
    step = model.config.chunk_size * chunks_per_write
    chunk = model.config.chunk_size
    # Counted in chunks, as `model.compress` and `ask` count them: one progress unit per kind of work.
    progress = logging.tqdm(
        initial=-(-start // chunk),
        total=-(-total // chunk),
        desc="compressing",
        unit="chunk",
        disable=not _progress(show_progress, total, model),
    )
    for offset in range(start, total, step):
        part = model.compress(
            ids[offset : offset + step], show_progress=False, offload_to_cpu=True, bank_dtype=bank.bank_dtype
        )
        bank.append(part)
        last = offset + step >= total
        # Every step's blocks reach the disk (and the manifest) before the next step: an interruption loses at
        # most `chunks_per_write` chunks of work, and `resume` continues from there.
        bank.save_pretrained(out_dir, max_shard_size=max_shard_size, complete=last)
        bank = LycheeMemoryBank.from_pretrained(out_dir, allow_incomplete=not last)  # blocks now read from disk
        progress.update(len(part))
    progress.close()
    return bank


def _resumable_bank(out_dir: Path, fingerprint: dict, document: dict, bank_dtype: str | None):
    """The bank in `out_dir` to continue, or None when there is nothing to resume (a new or empty folder)."""
    if not (out_dir / MANIFEST_NAME).is_file():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise MemoryBankError(f"{out_dir} holds no memory bank to resume: choose a new folder.")
        return None
    bank = LycheeMemoryBank.from_pretrained(out_dir, allow_incomplete=True)
    bank.check_compatible(fingerprint)
    if bank.document != document:
        made_from = f"{bank.document.get('num_tokens')} tokens" if bank.document else "no record of its document"
        raise MemoryBankError(
            f"{out_dir} holds a bank of another document ({made_from}; this one has {document['num_tokens']} tokens): "
            "pass --overwrite to replace it, or choose another folder."
        )
    if bank_dtype is not None and bank_dtype != bank.bank_dtype:
        raise MemoryBankError(
            f"{out_dir} stores {bank.bank_dtype} blocks, not {bank_dtype}: resume without --bank-dtype (or "
            "--overwrite to start over in the new format)."
        )
    return bank


def check_new_bank_folder(out_dir: str | Path) -> None:
    """Refuses a non-empty `out_dir` for a new bank, saying whether `--resume` or `--overwrite` would apply."""
    _clear_for_new_bank(Path(out_dir), overwrite=False)


def _clear_for_new_bank(out_dir: Path, overwrite: bool) -> None:
    """Refuses a folder holding anything, unless `overwrite` and it holds a bank: then its bank files go."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        hint = " (it holds an unfinished bank: --resume continues it)" if _is_unfinished(out_dir) else ""
        raise MemoryBankError(
            f"{out_dir} is not empty{hint}: choose a new folder, or pass --overwrite to replace the bank there "
            "(nothing is overwritten by default)."
        )
    if not (out_dir / MANIFEST_NAME).is_file():
        raise MemoryBankError(
            f"{out_dir} holds no memory bank: --overwrite replaces only a bank; choose a new folder for this one."
        )
    for path in out_dir.iterdir():
        if path.is_file() and BANK_FILE_PATTERN.fullmatch(path.name):
            path.unlink()


def _is_unfinished(out_dir: Path) -> bool:
    try:
        return not LycheeMemoryBank.from_pretrained(out_dir, allow_incomplete=True).complete
    except MemoryBankError:
        return False


def check_disk_space(
    model: LycheeMemoryForCausalLM, num_tokens: int, out_dir: Path, bank_dtype: str | None = None
) -> None:
    """Refuses a document whose bank (in format `bank_dtype`) would not fit on the disk holding `out_dir`."""
    blocks = -(-num_tokens // model.config.chunk_size)
    needed = blocks * bank_bytes_per_block(model, bank_dtype)
    existing = next((p for p in [out_dir, *out_dir.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise MemoryBankError(
            f"the bank for {num_tokens} tokens needs {needed / 2**30:.1f} GiB but {existing} has "
            f"{free / 2**30:.1f} GiB free: free space, choose another --out, use a smaller --bank-dtype (int8, int4) "
            "or raise the compression ratio"
        )


def convert_bank(
    source: str | Path,
    destination: str | Path,
    bank_dtype: str | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_BYTES,
) -> LycheeMemoryBank:
    """Rewrites a saved bank (version 1 or 2) as a version-2 bank in format `bank_dtype`, block by block.

    Host memory holds at most one shard. Converting to a finer format (int4 -> float16) keeps the coarse values:
    precision lost once is not restored. The bank is written into a hidden sibling of `destination`
    (`.NAME.converting-*`) and renamed into place once whole: a convert that fails or is interrupted leaves
    nothing at `destination`, so it can simply be run again (a killed process may leave the hidden folder).

    Args:
        source (`str` or `Path`): a complete bank folder.
        destination (`str` or `Path`): a new or empty folder.
        bank_dtype (`str`, *optional*): the new format (default: the source's).
        max_shard_size (`int`): bytes per shard file.

    Returns:
        `LycheeMemoryBank` reading from `destination`.
    """
    source, destination = Path(source), Path(destination)
    original = LycheeMemoryBank.from_pretrained(source)
    if destination.exists() and not destination.is_dir():
        raise MemoryBankError(f"{destination} is a file: choose a new folder for the converted bank.")
    if destination.exists() and any(destination.iterdir()):
        raise MemoryBankError(f"{destination} is not empty: choose a new folder for the converted bank.")
    view = LycheeMemoryBank(fingerprint=original.fingerprint)
    view.append(original)  # the source's blocks, still on disk: save_pretrained reads them one at a time
    view.document = original.document
    bank_dtype = check_bank_dtype(bank_dtype or original.bank_dtype)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.converting-", dir=destination.parent))
    try:
        view.save_pretrained(staging, bank_dtype=bank_dtype, max_shard_size=max_shard_size)
        if destination.exists():
            destination.rmdir()  # empty, as checked above
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return LycheeMemoryBank.from_pretrained(destination)


def describe_bank(bank: LycheeMemoryBank, verify: bool = True) -> dict:
    """What `lychee-hf info` prints about a bank; with `verify`, every block is read and checksummed first.

    Raises:
        `MemoryBankError`: when a block is missing, truncated or corrupted.
    """
    checked = bank.verify() if verify else None
    files = bank.stored_files()
    summary = {
        "blocks": len(bank),
        "tokens": bank.num_tokens,
        "bank_dtype": bank.bank_dtype,
        "complete": bank.complete,
        "block_files": len(files),
    }
    if checked is not None:
        summary["verified"] = f"{checked} blocks, checksums match"
    if files and bank.num_tokens:
        summary["mib_per_1k_tokens"] = round(sum(p.stat().st_size for p in files) / 2**20 * 1000 / bank.num_tokens, 3)
    return {**summary, **bank.fingerprint}


def bank_line(where: str | Path, bank: LycheeMemoryBank) -> str:
    """One line about a saved bank: blocks, tokens, format, size."""
    size = sum(path.stat().st_size for path in bank.stored_files())
    return f"{where}: {len(bank)} blocks, {bank.num_tokens} tokens, {bank.bank_dtype}, {size / 2**20:.1f} MiB"


def _progress(show_progress: bool | None, num_tokens: int, model: LycheeMemoryForCausalLM) -> bool:
    return wants_progress(show_progress, -(-num_tokens // model.config.chunk_size))
