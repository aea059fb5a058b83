"""Compressor pretraining: teach the memory tokens to pack a chunk so that the reasoner reads it as it reads the chunk.

Objective: a chunk of at most `chunk_size` tokens is compressed into one block with gradients on; the reasoner
(`reasoner` adapter on) reads that block as attention prefix, placed by `config.position_scheme` exactly as in
`generate`, then a token sequence, and the loss is taken over that sequence's scored tokens:

    loss = CE + distill_weight * T^2 * KL(teacher || student)

- CE (Activation Beacon's continuation loss): mean cross-entropy of the scored tokens. For a text window
  (`continuation_rows`) the sequence is the next `continuation_tokens` tokens of the same text and tokens 2..C are
  scored (the first one has no token of its own before it, only the block).
- KL (`distill_weight` > 0, `distillation.py`): the student is the reasoner reading the compressed block; the
  teacher is the frozen model reading the chunk's lossless block (its own K/V, the plain backbone, no gradients).
  KL(teacher || student) of the next-token distributions that predict the scored tokens, softened by
  `distill_temperature` T, in float32: compressed reading should behave like lossless reading, which is what the
  shipped default model does. `distill_weight=0` (the default) computes no teacher and is the CE alone.

Trainable: the memory-token embedding and the memory q/k/v projections (full or low-rank, as the checkpoint stores
them), plus an optional `compressor` LoRA adapter on the backbone (`peft_config`; active only while compressing).
The backbone and everything else stay frozen.

Rows (`compressor_rows.py`): text windows, by default of CPython's bundled documentation (`offline_corpus()`,
split by topic into training and held-out text), and reading rows (`reading_rows`): a QA example's block, then the
memory-update prompt and the memory the gold-fact teacher writes after it, that memory scored. Both are
`ContinuationRow`s; `pretrain_compressor(..., train_rows=...)` trains on reading rows too.

`evaluate_readings` reports the same scored tokens under three readings of the chunk: `compressed` (the block),
`raw` (the chunk itself as text before the sequence) and `none` (no context): a trained compressor lands between
`none` and `raw`, and the closer to `raw` the better. `kl_to_lossless` is the held-out KL (T = 1) of the compressed
reading to the lossless one.
"""

import math
from dataclasses import dataclass, field

import torch
from transformers import Trainer
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..modeling import LycheeMemoryBlock, positions_from_mask, role_adapter
from .compressor_rows import ContinuationRow, collate_continuations, continuation_rows, offline_corpus, reading_rows
from .distillation import chunk_list, kl_to_teacher, teacher_logits
from .trainer_utils import (
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

__all__ = [
    "CompressorPretrainingConfig",
    "CompressorPretrainingResult",
    "CompressorTrainer",
    "ContinuationRow",
    "collate_continuations",
    "compressed_blocks",
    "compressor_objective",
    "continuation_loss",
    "continuation_rows",
    "evaluate_readings",
    "offline_corpus",
    "pretrain_compressor",
    "reading_output",
    "reading_rows",
]


@dataclass
class CompressorPretrainingConfig(LycheeTrainingArguments):
    """`TrainingArguments` for compressor pretraining, plus the objective's settings. A `compressor` LoRA adapter on
    the backbone, if wanted, is configured apart: `pretrain_compressor(..., peft_config=...)`.

    Args:
        continuation_tokens (`int`, *optional*, defaults to 128): tokens after each chunk the reasoner predicts.
        eval_fraction (`float`, *optional*, defaults to 0.1): share of the corpus's topics held out.
        max_train_rows / max_eval_rows (`int`, *optional*): use at most this many (chunk, continuation) windows.
        distill_weight (`float`, *optional*, defaults to 0.0): weight of KL(lossless reading || compressed reading)
            added to the continuation loss; 0 trains on the continuation loss alone.
        distill_temperature (`float`, *optional*, defaults to 1.0): softmax temperature of that KL.
    """

    continuation_tokens: int = field(default=128, metadata={"help": "tokens predicted after the block"})
    eval_fraction: float = field(
        default=0.1, metadata={"help": "held-out share of the text (of the bundled corpus: of its topics)"}
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "at most this many training windows"})
    max_eval_rows: int | None = field(default=None, metadata={"help": "at most this many held-out windows"})
    distill_weight: float = field(
        default=0.0,
        metadata={"help": "weight of KL(lossless reading || compressed reading) added to the continuation loss"},
    )
    distill_temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the distillation KL"})
    learning_rate: float = training_default("learning_rate", 2e-4)
    num_train_epochs: float = training_default("num_train_epochs", 1.0, aliases=["--epochs"])
    per_device_train_batch_size: int = training_default("per_device_train_batch_size", 2, aliases=["--batch-size"])
    per_device_eval_batch_size: int = training_default("per_device_eval_batch_size", 2)

    def __post_init__(self):
        super().__post_init__()
        if self.continuation_tokens < 2:
            raise ValueError(f"continuation_tokens must be at least 2, got {self.continuation_tokens}.")
        if not self.distill_weight >= 0.0:  # also refuses NaN
            raise ValueError(
                f"distill_weight must be 0 or more, got {self.distill_weight}: use 0 for the continuation loss "
                "alone, or a positive weight (e.g. 1.0) to add the distillation KL."
            )
        if not self.distill_temperature > 0.0:
            raise ValueError(
                f"distill_temperature must be positive, got {self.distill_temperature}: use 1.0 for the plain "
                "next-token distributions, or above 1 to soften them."
            )


def compressed_blocks(
    model, chunk_ids: torch.LongTensor, chunk_lengths: torch.LongTensor | None = None
) -> list[LycheeMemoryBlock]:
    """Compresses chunks (B, Lc), right-padded to `chunk_lengths` (default: full rows), into blocks, gradients kept,
    with the `compressor` adapter on."""
    chunks = chunk_list(chunk_ids, chunk_lengths)
    return model.compress_chunks(chunks, [(0, chunk.numel()) for chunk in chunks])


def _raw_inputs(inputs: dict, device: torch.device) -> dict:
    """Each row's real chunk tokens then its real sequence, left-padded; the chunk is never scored."""
    names = ("chunk_ids", "chunk_lengths", "input_ids", "attention_mask", "labels")
    sequences, labels = [], []
    for chunk, n, ids, mask, scored in zip(*(inputs[name].cpu() for name in names)):
        real = mask.bool()
        sequences.append(torch.cat([chunk[: int(n)], ids[real]]))
        labels.append(torch.cat([torch.full((int(n),), IGNORE_INDEX), scored[real]]))
    length = max(sequence.numel() for sequence in sequences)
    batch = {
        "input_ids": torch.zeros((len(sequences), length), dtype=torch.long),
        "attention_mask": torch.zeros((len(sequences), length), dtype=torch.long),
        "labels": torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long),
    }
    for i, (sequence, label) in enumerate(zip(sequences, labels)):
        batch["input_ids"][i, length - sequence.numel() :] = sequence
        batch["attention_mask"][i, length - sequence.numel() :] = 1
        batch["labels"][i, length - label.numel() :] = label
    return {name: tensor.to(device) for name, tensor in batch.items()}


def reading_output(model, inputs: dict, reading: str = "compressed", forward=None) -> CausalLMOutputWithPast:
    """The reasoner's output (loss over the scored tokens, logits) with the chunk read as `compressed`, `raw` or
    `none`.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (unwrapped).
        inputs (`dict`): a collated batch (`collate_continuations`).
        reading (`str`): how the reasoner sees the chunk.
        forward (`nn.Module`, *optional*): what to call instead of `model` (a distributed training wrapper).
    """
    forward = forward or model
    device = model.device
    ids, mask, labels = (inputs[name].to(device) for name in ("input_ids", "attention_mask", "labels"))
    with role_adapter(model, "reasoner"):
        if reading == "compressed":
            blocks = compressed_blocks(model, inputs["chunk_ids"].to(device), inputs.get("chunk_lengths"))
            return forward(input_ids=ids, attention_mask=mask, labels=labels, memory_blocks=blocks)
        if reading == "none":
            return forward(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), labels=labels)
        if reading == "raw":
            raw = _raw_inputs(inputs, device)
            return forward(**raw, position_ids=positions_from_mask(raw["attention_mask"]))
    raise ValueError(f"reading must be 'compressed', 'raw' or 'none', got {reading!r}.")


def continuation_loss(model, inputs: dict, reading: str = "compressed", forward=None) -> torch.Tensor:
    """Mean cross-entropy of the scored tokens given the chunk read as `compressed`, `raw` or `none` (see
    `reading_output`)."""
    return reading_output(model, inputs, reading, forward).loss


def compressor_objective(
    model, inputs: dict, distill_weight: float = 0.0, temperature: float = 1.0, forward=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training loss through a freshly compressed block: CE + `distill_weight` * KL to the lossless reading.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (unwrapped).
        inputs (`dict`): a collated batch (`collate_continuations`).
        distill_weight (`float`, *optional*, defaults to 0.0): 0 computes no teacher (the CE alone).
        temperature (`float`, *optional*, defaults to 1.0): the KL's softmax temperature.
        forward (`nn.Module`, *optional*): what to call instead of `model` (a distributed training wrapper).

    Returns:
        `(loss, ce, kl)`: `kl` is `None` when `distill_weight` is 0.
    """
    student = reading_output(model, inputs, "compressed", forward)
    if distill_weight == 0.0:
        return student.loss, student.loss, None
    kl = kl_to_teacher(student.logits, teacher_logits(model, inputs), inputs["labels"], temperature)
    return student.loss + distill_weight * kl, student.loss, kl


class CompressorTrainer(Trainer):
    """A `Trainer` whose loss is `compressor_objective` (weights from `args`); with distillation on, the logs hold
    the two terms (`ce`, `kl`) beside the loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, data_collator=collate_continuations, **kwargs)
        self._terms: dict[str, list[float]] = {"ce": [], "kl": []}

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        prepare_for_fsdp(unwrapped)
        weight, temperature = getattr(self.args, "distill_weight", 0.0), getattr(self.args, "distill_temperature", 1.0)
        loss, ce, kl = compressor_objective(unwrapped, inputs, weight, temperature, forward=model)
        if kl is not None and model.training:
            self._terms["ce"].append(float(ce.detach()))
            self._terms["kl"].append(float(kl.detach()))
        loss = with_every_trainable_weight(loss, model, unwrapped)  # DDP: the last memory queries get no gradient
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._terms["kl"]:
            logs = {**logs, **{name: sum(v) / len(v) for name, v in self._terms.items()}}
            self._terms = {"ce": [], "kl": []}
        super().log(logs, start_time)

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


@torch.no_grad()
def evaluate_readings(model, rows: list[ContinuationRow], batch_size: int = 2, kl: bool = True) -> dict[str, float]:
    """Mean held-out loss (nats/token) and perplexity per reading of the chunk, and `kl_to_lossless`.

    Args:
        model (`LycheeMemoryForCausalLM`): the model.
        rows (`list[ContinuationRow]`): held-out rows.
        batch_size (`int`, *optional*, defaults to 2): rows per forward.
        kl (`bool`, *optional*, defaults to `True`): also the mean KL (T = 1) of the compressed reading to the
            lossless one (one more compression and forward per batch).
    """
    batches = [collate_continuations(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    # One compressed forward per batch gives its loss and, against the lossless teacher, the KL.
    compressed = [compressor_objective(model, batch, distill_weight=1.0 if kl else 0.0) for batch in batches]
    results = {"compressed": sum(float(ce) for _, ce, _ in compressed) / len(batches)}
    for reading in ("raw", "none"):
        results[reading] = sum(float(continuation_loss(model, batch, reading)) for batch in batches) / len(batches)
    results.update({f"{k}_perplexity": math.exp(v) for k, v in list(results.items())})
    if kl:
        results["kl_to_lossless"] = sum(float(divergence) for _, _, divergence in compressed) / len(batches)
    return results


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
    train_rows: list[ContinuationRow] | None = None,
    callbacks: list | None = None,
) -> CompressorPretrainingResult:
    """Trains the compressor's memory weights (and optional compressor LoRA) of `model` in place.

    Args:
        model (`LycheeMemoryForCausalLM`): a model in `compression_mode="memory_tokens"`.
        tokenizer: its tokenizer.
        config (`CompressorPretrainingConfig`): training settings (`distill_weight` > 0 adds the distillation KL).
        train_text / eval_text (`str`, *optional*): the text (default: `offline_corpus()`).
        peft_config (`peft.LoraConfig`, *optional*): also train a new `compressor` LoRA adapter on the backbone
            (e.g. `LoraArguments(lora_r=8).lora_config()`); default: the memory embedding and projections only. A
            model that has a `compressor` adapter already trains it on either way.
        resume_from_checkpoint (`bool` or `str`, *optional*): continue an interrupted run from the last
            checkpoint in `config.output_dir` (`True`) or from this checkpoint folder: weights, optimizer, scheduler,
            RNG and step restored, so the result equals one uninterrupted run (needs `save_strategy="steps"`).
        train_rows (`list[ContinuationRow]`, *optional*): rows trained on besides the text's windows, e.g.
            `reading_rows(model, tokenizer, examples)`; with `config.max_train_rows=0` they are the only ones.
        callbacks (`list[TrainerCallback]`, *optional*): e.g. `TimeLimitCallback(minutes)`.
            Held-out figures stay on the held-out text's windows.

    Returns:
        `CompressorPretrainingResult` with held-out losses (compressed / raw / none, and `kl_to_lossless`) before and
        after.
    """
    if model.config.compression_mode != "memory_tokens":
        raise ValueError(
            "Compressor pretraining trains memory tokens: load the model with compression_mode='memory_tokens'."
        )
    if train_text is None or eval_text is None:
        default_train, default_eval = offline_corpus(config.eval_fraction)
        train_text, eval_text = train_text or default_train, eval_text or default_eval
    chunk, continuation = model.config.chunk_size, config.continuation_tokens
    rows = continuation_rows(tokenizer, train_text, chunk, continuation)[: config.max_train_rows]
    rows += list(train_rows or [])
    eval_rows = continuation_rows(tokenizer, eval_text, chunk, continuation)[: config.max_eval_rows]
    if not rows or not eval_rows:
        raise ValueError(
            f"The text is too short for one window of chunk_size + continuation_tokens = {chunk + continuation} "
            "tokens in the training or held-out part: give more text or lower continuation_tokens."
        )
    if peft_config is not None:
        add_role_lora(model, "compressor", peft_config)
    train_only(model, ["compressor"])
    model.eval()
    before = evaluate_readings(model, eval_rows, config.per_device_eval_batch_size)
    trainer = CompressorTrainer(model=model, args=config, train_dataset=ListDataset(rows), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(config.output_dir, resume_from_checkpoint))
    model.eval()
    after = evaluate_readings(model, eval_rows, config.per_device_eval_batch_size)
    return CompressorPretrainingResult(before, after, len(rows), len(eval_rows), trainer)
