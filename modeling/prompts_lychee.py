"""The reasoner's and the gate's prompts as token ids, and the id bookkeeping around every `generate` call.

The templates (`templates_lychee.py`) are tokenized once into pieces; these helpers splice a question and a
working memory between the pieces, left-pad a batch of prompts, name the stop and pad ids of a generation config,
and read back what a call wrote. The gate, the reasoner loop, the baselines and the training recipes all build
their prompts here, so every one of them reads exactly what the model reads.
"""

import copy

import torch
from transformers import GenerationConfig


def build_prompt(pieces: list[list[int]], question: torch.LongTensor, memory: torch.LongTensor) -> torch.LongTensor:
    """piece 0 + question + piece 1 + memory + piece 2, as one 1-D tensor on the question's device."""
    device = question.device
    parts = [
        torch.tensor(pieces[0], dtype=torch.long, device=device),
        question,
        torch.tensor(pieces[1], dtype=torch.long, device=device),
        memory.to(device),
        torch.tensor(pieces[2], dtype=torch.long, device=device),
    ]
    return torch.cat(parts)


def left_pad(rows: list[torch.LongTensor], pad_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Stacks 1-D rows into (B, T) ids and mask, padded on the left."""
    length = max(row.numel() for row in rows)
    ids = rows[0].new_full((len(rows), length), pad_id)
    mask = rows[0].new_zeros((len(rows), length))
    for i, row in enumerate(rows):
        if row.numel():
            ids[i, length - row.numel() :] = row
            mask[i, length - row.numel() :] = 1
    return ids, mask


def id_list(ids: int | list[int] | None) -> list[int]:
    """A generation config's `eos_token_id` (one id, several, or none) as a list."""
    return [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))


def stop_and_pad_ids(generation_config: GenerationConfig) -> tuple[list[int], int]:
    """(stop ids, pad id) of a generation config; without a pad id, the first stop id (or 0) pads."""
    eos = id_list(generation_config.eos_token_id)
    pad = generation_config.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    return eos, pad


def count_decoded(generated: torch.LongTensor, eos_ids: list[int], pad_id: int) -> int:
    """Tokens generated up to and including the first stop id (the rest is padding of finished rows)."""
    stops = torch.isin(generated, torch.tensor(eos_ids or [pad_id], device=generated.device)).nonzero()
    return int(stops[0, 0]) + 1 if len(stops) else generated.numel()


def clean_memory(generated: torch.LongTensor, drop_ids: list[int], budget: int) -> torch.LongTensor:
    """The new memory: generated ids without pad/eos ids (other special tokens stay), last `budget` kept."""
    if drop_ids:
        generated = generated[~torch.isin(generated, torch.tensor(drop_ids, device=generated.device))]
    return generated[-budget:]


def memory_update_config(
    final_config: GenerationConfig, budget: int, memory_config: GenerationConfig | None = None
) -> GenerationConfig:
    """Decoding of memory updates: `memory_config` if given (its lengths win), else the final answer's settings
    with the memory budget as length; always plain tensor output."""
    update = copy.deepcopy(memory_config or final_config)
    update.max_new_tokens = (memory_config.max_new_tokens if memory_config else None) or budget
    update.min_new_tokens = memory_config.min_new_tokens if memory_config else None
    update.max_length = None
    update.num_return_sequences = 1
    update.return_dict_in_generate = False
    update.output_scores = update.output_logits = False
    return update
