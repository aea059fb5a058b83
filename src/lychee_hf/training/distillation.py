"""Distillation towards lossless reading: the reasoner reading a compressed block should predict as it does reading
the chunk's lossless block.

Teacher: the frozen model reading each chunk's lossless block (the chunk's own K/V, `compress_chunks(...,
lossless=True)`, computed with the plain backbone, so that it stays fixed while a `compressor` LoRA trains), with
the `reasoner` adapter on and no gradients. Student: the same reasoner reading the compressed block, gradients
into the compressor. `kl_to_teacher` is KL(teacher || student) of the next-token distributions that predict the
scored tokens, in float32, softened by a temperature T and scaled by T^2 (Hinton et al.) so that the gradient's
size does not depend on T.
"""

import torch
import torch.nn.functional as F

from ..modeling import LycheeMemoryBlock, role_adapter
from .trainer_utils import IGNORE_INDEX


def chunk_list(chunk_ids: torch.LongTensor, chunk_lengths: torch.LongTensor | None) -> list[torch.LongTensor]:
    """Rows of right-padded `chunk_ids` (B, Lc) cut to their `chunk_lengths` (B,) (all of Lc when `None`)."""
    if chunk_lengths is None:
        return list(chunk_ids)
    return [ids[: int(length)] for ids, length in zip(chunk_ids, chunk_lengths)]


@torch.no_grad()
def lossless_blocks(
    model, chunk_ids: torch.LongTensor, chunk_lengths: torch.LongTensor | None = None
) -> list[LycheeMemoryBlock]:
    """The teacher's blocks: each chunk's own K/V with the plain backbone, whatever the model's compression mode.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (unwrapped).
        chunk_ids (`torch.LongTensor`): (B, Lc) right-padded chunks.
        chunk_lengths (`torch.LongTensor`, *optional*): (B,) real tokens per chunk (default: all Lc).

    Returns:
        `list[LycheeMemoryBlock]` without gradients, one per row.
    """
    chunks = chunk_list(chunk_ids.to(model.device), chunk_lengths)
    return model.compress_chunks(chunks, [(0, c.numel()) for c in chunks], lossless=True, role=None)


@torch.no_grad()
def teacher_logits(model, inputs: dict) -> torch.Tensor:
    """The reasoner's logits (B, L, V) over `inputs["input_ids"]` read after each row's lossless block.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (unwrapped: the teacher takes no part in backward).
        inputs (`dict`): a collated batch (`collate_continuations`).
    """
    blocks = lossless_blocks(model, inputs["chunk_ids"], inputs.get("chunk_lengths"))
    with role_adapter(model, "reasoner"):
        return model(
            input_ids=inputs["input_ids"].to(model.device),
            attention_mask=inputs["attention_mask"].to(model.device),
            memory_blocks=blocks,
        ).logits


def scored_logits(logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
    """The logits that predict the labelled tokens, as the causal-LM loss shifts them: (N, V) for N scored tokens.

    Position p predicts token p + 1, so (B, L, V) logits and (B, L) labels give `logits[:, :-1]` where
    `labels[:, 1:]` is not `IGNORE_INDEX`.
    """
    scored = labels[:, 1:].to(logits.device) != IGNORE_INDEX  # (B, L - 1)
    return logits[:, :-1][scored]


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.LongTensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean KL(teacher || student) over the scored tokens' next-token distributions, in float32, times T^2.

    Args:
        student_logits (`torch.Tensor`): (B, L, V), with gradients.
        teacher_logits (`torch.Tensor`): (B, L, V), same inputs read losslessly.
        labels (`torch.LongTensor`): (B, L), `IGNORE_INDEX` where a token is not scored.
        temperature (`float`, *optional*, defaults to 1.0): both distributions are softmax(logits / T).

    Returns:
        `torch.Tensor`: a scalar, 0 when the distributions agree.
    """
    student = F.log_softmax(scored_logits(student_logits, labels).float() / temperature, dim=-1)  # (N, V)
    teacher = F.log_softmax(scored_logits(teacher_logits, labels).float() / temperature, dim=-1)
    # "batchmean" over N tokens: sum_v p_t (log p_t - log p_s), averaged over scored tokens.
    kl = F.kl_div(student, teacher.to(student.device), reduction="batchmean", log_target=True)
    return kl * temperature**2
