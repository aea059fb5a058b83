"""Compressor pretraining: teach the memory tokens to pack a chunk so that the reasoner can continue its text.

Objective (Activation Beacon's continuation loss, in the reasoner's own reading setup): a chunk of `chunk_size`
tokens is compressed into one block with gradients on; the reasoner reads that block as attention prefix,
placed by `config.position_scheme` exactly as in `generate`, and predicts the next `continuation_tokens` tokens
of the same text. The loss is the mean cross-entropy of continuation tokens 2..C (the first one has no token
of its own before it, only the block). Trainable: the memory-token embedding and the memory q/k/v projections
(full or low-rank, as the checkpoint stores them), plus an optional `compressor` LoRA adapter on the backbone
(`peft_config`; active only while compressing). The backbone and everything else stay frozen.

Text: `offline_corpus()` is the English documentation that ships with CPython (`pydoc_data.topics`, ~170 help
topics on the language): offline everywhere Python runs, deterministic, and nothing downloaded at run time.
Topics are split by name into training and held-out text, so held-out windows are never trained on.

`evaluate_readings` reports the same scored tokens under three readings of the chunk: `compressed` (the block),
`raw` (the chunk itself as text before the continuation) and `none` (no context): a trained compressor lands
between `none` and `raw`, and the closer to `raw` the better.
"""

import math
from dataclasses import dataclass, field

import torch
from transformers import Trainer

from ..modeling.adapters_lychee import role_adapter
from ..modeling.memory_bank_lychee import LycheeMemoryBlock
from .data import (
    IGNORE_INDEX,
    ListDataset,
    LycheeTrainingArguments,
    add_role_lora,
    checkpoint_to_resume,
    prepare_for_fsdp,
    train_only,
    training_default,
    with_every_trainable_weight,
)


@dataclass
class CompressorPretrainingConfig(LycheeTrainingArguments):
    """`TrainingArguments` for compressor pretraining, plus the objective's settings. A `compressor` LoRA adapter on
    the backbone, if wanted, is configured apart: `pretrain_compressor(..., peft_config=...)`.

    Args:
        continuation_tokens (`int`, *optional*, defaults to 128): tokens after each chunk the reasoner predicts.
        eval_fraction (`float`, *optional*, defaults to 0.1): share of the corpus's topics held out.
        max_train_rows / max_eval_rows (`int`, *optional*): use at most this many (chunk, continuation) windows.
    """

    continuation_tokens: int = field(default=128, metadata={"help": "tokens predicted after the block"})
    eval_fraction: float = field(
        default=0.1, metadata={"help": "held-out share of the text (of the bundled corpus: of its topics)"}
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "at most this many training windows"})
    max_eval_rows: int | None = field(default=None, metadata={"help": "at most this many held-out windows"})
    learning_rate: float = training_default("learning_rate", 2e-4)
    num_train_epochs: float = training_default("num_train_epochs", 1.0, aliases=["--epochs"])
    per_device_train_batch_size: int = training_default("per_device_train_batch_size", 2, aliases=["--batch-size"])
    per_device_eval_batch_size: int = training_default("per_device_eval_batch_size", 2)

    def __post_init__(self):
        super().__post_init__()
        if self.continuation_tokens < 2:
            raise ValueError(f"continuation_tokens must be at least 2, got {self.continuation_tokens}.")


def offline_corpus(eval_fraction: float = 0.1) -> tuple[str, str]:
    """(training text, held-out text) from CPython's bundled documentation topics, split by topic name."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    held_out = set(names[:: max(1, round(1 / eval_fraction))])
    train = "\n\n".join(topics[name] for name in names if name not in held_out)
    test = "\n\n".join(topics[name] for name in names if name in held_out)
    return train, test


@dataclass
class ContinuationRow:
    """A chunk to compress and the text that follows it: `chunk_ids` (chunk_size,), `continuation_ids` (C,)."""

    chunk_ids: torch.LongTensor
    continuation_ids: torch.LongTensor


def continuation_rows(tokenizer, text: str, chunk_size: int, continuation_tokens: int) -> list[ContinuationRow]:
    """Cuts `text` into consecutive, non-overlapping (chunk, continuation) windows."""
    ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
    window = chunk_size + continuation_tokens
    return [
        ContinuationRow(ids[start : start + chunk_size], ids[start + chunk_size : start + window])
        for start in range(0, ids.numel() - window + 1, window)
    ]


def collate_continuations(rows: list[ContinuationRow]) -> dict:
    return {
        "chunk_ids": torch.stack([row.chunk_ids for row in rows]),
        "continuation_ids": torch.stack([row.continuation_ids for row in rows]),
    }


def compressed_blocks(model, chunk_ids: torch.LongTensor) -> list[LycheeMemoryBlock]:
    """Compresses full chunks (B, chunk_size) into blocks, gradients kept, with the `compressor` adapter on."""
    return model.compress_chunks(list(chunk_ids), [(0, chunk_ids.shape[1])] * chunk_ids.shape[0])


def continuation_loss(model, inputs: dict, reading: str = "compressed", forward=None) -> torch.Tensor:
    """Mean cross-entropy of continuation tokens 2..C given the chunk read as `compressed`, `raw` or `none`.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (unwrapped).
        inputs (`dict`): `chunk_ids` (B, chunk_size) and `continuation_ids` (B, C).
        reading (`str`): how the reasoner sees the chunk.
        forward (`nn.Module`, *optional*): what to call instead of `model` (a distributed training wrapper).
    """
    forward = forward or model
    chunk = inputs["chunk_ids"].to(model.device)
    continuation = inputs["continuation_ids"].to(model.device)
    with role_adapter(model, "reasoner"):
        if reading == "compressed":
            blocks = compressed_blocks(model, chunk)
            return forward(input_ids=continuation, labels=continuation, memory_blocks=blocks).loss
        if reading == "none":
            return forward(input_ids=continuation, labels=continuation).loss
        if reading == "raw":
            ids = torch.cat([chunk, continuation], dim=1)
            labels = ids.clone()
            labels[:, : chunk.shape[1] + 1] = IGNORE_INDEX  # score the same tokens as the other readings
            return forward(input_ids=ids, labels=labels).loss
    raise ValueError(f"reading must be 'compressed', 'raw' or 'none', got {reading!r}.")


class CompressorTrainer(Trainer):
    """A `Trainer` whose loss is the continuation loss through a freshly compressed block."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, data_collator=collate_continuations, **kwargs)

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        prepare_for_fsdp(unwrapped)
        loss = continuation_loss(unwrapped, inputs, "compressed", forward=model)
        loss = with_every_trainable_weight(loss, model, unwrapped)  # DDP: the last memory queries get no gradient
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


@torch.no_grad()
def evaluate_readings(model, rows: list[ContinuationRow], batch_size: int = 2) -> dict[str, float]:
    """Mean held-out continuation loss (nats/token) and perplexity per reading of the chunk."""
    results = {}
    for reading in ("compressed", "raw", "none"):
        losses = [
            float(continuation_loss(model, collate_continuations(rows[i : i + batch_size]), reading))
            for i in range(0, len(rows), batch_size)
        ]
        results[reading] = sum(losses) / len(losses)
    return {**results, **{f"{k}_perplexity": math.exp(v) for k, v in list(results.items())}}


@dataclass
class CompressorPretrainingResult:
    """Held-out losses per reading before and after training, and the trainer (log in `state.log_history`)."""

    before: dict
    after: dict
    train_rows: int
    eval_rows: int
    trainer: CompressorTrainer


def pretrain_compressor(
    model,
    tokenizer,
    config: CompressorPretrainingConfig,
    train_text: str | None = None,
    eval_text: str | None = None,
    peft_config=None,
    resume_from_checkpoint: bool | str | None = None,
) -> CompressorPretrainingResult:
    """Trains the compressor's memory weights (and optional compressor LoRA) of `model` in place.

    Args:
        model (`LycheeMemoryForCausalLM`): a model in `compression_mode="memory_tokens"`.
        tokenizer: its tokenizer.
        config (`CompressorPretrainingConfig`): training settings.
        train_text / eval_text (`str`, *optional*): the text (default: `offline_corpus()`).
        peft_config (`peft.LoraConfig`, *optional*): also train a new `compressor` LoRA adapter on the backbone
            (e.g. `LoraArguments(lora_r=8).lora_config()`); default: the memory embedding and projections only. A
            model that has a `compressor` adapter already trains it on either way.
        resume_from_checkpoint (`bool` or `str`, *optional*): continue an interrupted run from the last
            checkpoint in `config.output_dir` (`True`) or from this checkpoint folder: weights, optimizer, scheduler,
            RNG and step restored, so the result equals one uninterrupted run (needs `save_strategy="steps"`).

    Returns:
        `CompressorPretrainingResult` with held-out losses (compressed / raw / none) before and after.
    """
    if model.config.compression_mode != "memory_tokens":
        raise ValueError(
            "Compressor pretraining trains memory tokens: load the model with compression_mode='memory_tokens'."
        )
    if train_text is None or eval_text is None:
        default_train, default_eval = offline_corpus(config.eval_fraction)
        train_text, eval_text = train_text or default_train, eval_text or default_eval
    chunk, continuation = model.config.chunk_size, config.continuation_tokens
    train_rows = continuation_rows(tokenizer, train_text, chunk, continuation)[: config.max_train_rows]
    eval_rows = continuation_rows(tokenizer, eval_text, chunk, continuation)[: config.max_eval_rows]
    if not train_rows or not eval_rows:
        raise ValueError(
            f"The text is too short for one window of chunk_size + continuation_tokens = {chunk + continuation} "
            "tokens in the training or held-out part: give more text or lower continuation_tokens."
        )
    if peft_config is not None:
        add_role_lora(model, "compressor", peft_config)
    train_only(model, ["compressor"])
    model.eval()
    before = evaluate_readings(model, eval_rows, config.per_device_eval_batch_size)
    trainer = CompressorTrainer(model=model, args=config, train_dataset=ListDataset(train_rows))
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(config.output_dir, resume_from_checkpoint))
    model.eval()
    after = evaluate_readings(model, eval_rows, config.per_device_eval_batch_size)
    return CompressorPretrainingResult(before, after, len(train_rows), len(eval_rows), trainer)
