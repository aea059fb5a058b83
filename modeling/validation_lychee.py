"""Checks of what `LycheeMemoryForCausalLM.compress` and `generate` are given, at the boundary, with the fix.

Each check takes the model (its config, vocabulary, device and fingerprint) and either returns the inputs in the
form the pipeline reads (on the model's device, padding removed) or raises naming what to change.
"""

import torch

from .memory_bank_lychee import LycheeMemoryBank, MemoryBankError


def check_integer_ids(name: str, ids: torch.Tensor) -> None:
    """Token ids must be integers: float ids would be truncated into other tokens without a word."""
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}: pass the tokenizer's ids.")


def check_ids_in_vocabulary(model, name: str, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """The unmasked `ids` must lie in the model's vocabulary."""
    real = ids[mask.bool()]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= model.vocab_size):
        raise ValueError(
            f"{name} holds ids outside the vocabulary [0, {model.vocab_size}) (min {int(real.min())}, max "
            f"{int(real.max())}): tokenize with this model's tokenizer."
        )


def unpadded_rows(ids: torch.LongTensor, mask: torch.Tensor) -> list[torch.LongTensor]:
    """Each row of (B, L) `ids` without its masked positions."""
    return [row[row_mask.bool()] for row, row_mask in zip(ids, mask)]


def check_context(model, context_ids, attention_mask, single: bool) -> tuple[torch.LongTensor, torch.Tensor]:
    """The documents as (B, N) ids and mask on the model's device; `single`: exactly one document."""
    if not isinstance(context_ids, torch.Tensor):
        raise TypeError(f"context_ids must be a torch.LongTensor, got {type(context_ids).__name__}.")
    check_integer_ids("context_ids", context_ids)
    if context_ids.dim() == 1:
        context_ids = context_ids[None]
        attention_mask = attention_mask[None] if attention_mask is not None else None
    if context_ids.dim() != 2:
        raise ValueError(f"context_ids must be (N,) or (B, N), got shape {tuple(context_ids.shape)}.")
    if single and context_ids.shape[0] != 1:
        raise ValueError(
            f"compress takes one document, got {context_ids.shape[0]} rows: use compress_batch for several."
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(context_ids)
    if attention_mask.shape != context_ids.shape:
        raise ValueError(
            f"context_attention_mask has shape {tuple(attention_mask.shape)} but context_ids has "
            f"{tuple(context_ids.shape)}: they must match."
        )
    context_ids, attention_mask = context_ids.to(model.device), attention_mask.to(model.device)
    empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
    if context_ids.shape[1] == 0 or empty:
        raise ValueError(f"The context is empty (rows {empty or 'all'} have no tokens): pass a non-empty document.")
    check_ids_in_vocabulary(model, "context_ids", context_ids, attention_mask)
    return context_ids, attention_mask


def check_questions(model, input_ids, attention_mask) -> list[torch.LongTensor]:
    """The (B, L) questions as one unpadded 1-D row each, on the model's device."""
    if input_ids is None or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be the (B, L) question ids when answering over a context.")
    check_integer_ids("input_ids", input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
        )
    check_ids_in_vocabulary(model, "input_ids", input_ids, attention_mask)
    if model.config.update_template_ids is None or model.config.final_template_ids is None:
        raise ValueError("This config has no prompt templates: build the model with from_backbone(model, tokenizer).")
    return unpadded_rows(input_ids.to(model.device), attention_mask.to(model.device))


def check_banks(model, memory, rows: int) -> list[LycheeMemoryBank]:
    """One complete bank per row, each compatible with the model (one bank for every row is repeated)."""
    # One bank (or a bank-like view: anything that reads blocks, e.g. a corpus read as one bank) for every row.
    one = isinstance(memory, LycheeMemoryBank) or hasattr(memory, "block")
    banks = [memory] * rows if one else list(memory)
    if len(banks) != rows:
        raise ValueError(f"Got {len(banks)} memory banks for {rows} questions: pass one bank, or one per row.")
    expected = model.memory_fingerprint()
    for bank in {id(b): b for b in banks}.values():
        if not len(bank):
            raise ValueError("A memory bank is empty: compress a non-empty document.")
        if not bank.complete:
            raise MemoryBankError(
                f"A memory bank covers only {bank.num_tokens} tokens of its document (its writing did not "
                "finish): complete it with `lychee-hf compress ... --resume` before asking questions."
            )
        bank.check_compatible(expected)
    return banks


def check_prompt_lengths(config, questions: list[torch.LongTensor], max_new_tokens: int | None) -> None:
    """Memory updates and the answer must fit the backbone's positions for the longest question."""
    longest = max(q.numel() for q in questions)
    needed = config.slots_per_block + config.template_length("update") + longest + 2 * config.memory_budget
    limit = config.text_config.max_position_embeddings
    if needed > limit:
        raise ValueError(
            f"A question of {longest} tokens makes a memory update span {needed} positions, beyond the "
            f"backbone's {limit}: shorten the question or lower memory_budget / chunk_size."
        )
    if max_new_tokens is None:
        return
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    prompt = config.template_length("final") + longest + config.memory_budget
    if prompt + max_new_tokens > limit:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} would run the answer to position {prompt + max_new_tokens}, beyond "
            f"the backbone's {limit} (the final prompt takes up to {prompt}): use at most {limit - prompt}."
        )
