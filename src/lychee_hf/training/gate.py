"""Gate training: the `gate` LoRA adapter learns, per block, P(the block helps answer the question | memory).

Rows come from examples that name their supporting passages (our generators, MemAgent JSONL with a
`supporting` field, HotpotQA supporting facts): every block of every document is one row, labelled related when
it holds part of a supporting passage. The working memory the gate sees at block i comes from a documented
teacher:

- `gold` (default): the gold supporting passages that lie wholly in blocks before i, in document order, as
  text (the last `memory_budget` tokens), or the initial memory when none has been seen. This is what a
  perfect reasoner would have written, so the gate learns to judge a block against what is already known.
- `initial`: always the initial memory (a memory-blind gate).

`GateTrainingConfig` (a `TrainingArguments` with the gate's own fields) and `GateTrainer` (a `Trainer` whose loss
is weighted binary cross-entropy on logit(yes) - logit(no)) are the pair; `train_gate` wires them up and
returns the held-out precision, recall, F1 and AUROC.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer
from transformers.utils import logging

from ..bank_tools import compress_to_disk
from ..data import QAExample, supporting_chunks
from ..metrics import classification_metrics
from ..modeling import LycheeMemoryBank, LycheeMemoryBlock, gate_prompt
from .teacher import gold_memory_texts
from .trainer_utils import (
    ListDataset,
    LycheeTrainingArguments,
    add_role_lora,
    checkpoint_to_resume,
    train_only,
    training_default,
)

logger = logging.get_logger(__name__)

TEACHERS = ("gold", "initial")


@dataclass
class GateTrainingConfig(LycheeTrainingArguments):
    """`TrainingArguments` for the gate, plus the adapter, teacher and class-balance settings.

    The gate's LoRA adapter is configured apart, as TRL's trainers take it: `train_gate(..., peft_config=...)`.

    Args:
        teacher (`str`, *optional*, defaults to `"gold"`): where the working memory of each row comes from
            (`"gold"` or `"initial"`, see the module docstring).
        positive_weight (`float`, *optional*): weight of the related class in the loss; `None` (default) uses
            (#unrelated / #related) of the training rows, so both classes weigh the same in total.
        eval_fraction (`float`, *optional*, defaults to 0.25): share of the examples held out when no separate
            evaluation examples are given (split by document, never by block).
        decision_threshold (`float`, *optional*, defaults to 0.5): P(related) at which a block counts as
            predicted related in the reported precision / recall / F1.
        bank_dir (`str`, *optional*): keep the documents' banks on disk under this (new) folder instead of in
            host memory: needed when all blocks of all documents do not fit (a 7B block of 1024 slots is ~58 MB).
    """

    teacher: str = field(default="gold", metadata={"help": "working memory the gate sees", "choices": list(TEACHERS)})
    positive_weight: float | None = field(
        default=None, metadata={"help": "loss weight of the related class (None: #unrelated / #related)"}
    )
    eval_fraction: float = field(default=0.25, metadata={"help": "held-out share of the examples"})
    decision_threshold: float = field(
        default=0.5, metadata={"help": "P(related) at which a block counts as predicted related in the metrics"}
    )
    bank_dir: str | None = field(
        default=None, metadata={"help": "keep the training banks on disk here (large models / many rows)"}
    )
    learning_rate: float = training_default("learning_rate", 5e-4)
    num_train_epochs: float = training_default("num_train_epochs", 3.0, aliases=["--epochs"])
    per_device_train_batch_size: int = training_default("per_device_train_batch_size", 8, aliases=["--batch-size"])
    per_device_eval_batch_size: int = training_default("per_device_eval_batch_size", 8)

    def __post_init__(self):
        super().__post_init__()
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher={self.teacher!r} is not one of {TEACHERS}.")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {self.eval_fraction}.")
        if self.positive_weight is not None and self.positive_weight <= 0:
            raise ValueError(f"positive_weight must be positive, got {self.positive_weight}.")


@dataclass
class GateRow:
    """One (block, question, memory) classification example.

    Attributes:
        bank (`LycheeMemoryBank`): the document's bank (in host memory or on disk: blocks load when a batch needs
            them, so a disk bank keeps memory flat however many rows there are).
        block_index (`int`): the block the gate reads as prefix.
        prompt_ids (`torch.LongTensor`): (L,) the gate prompt (question + teacher memory).
        label (`int`): 1 if the block holds part of a supporting passage, else 0.
        example_id (`str`): the example the row comes from.
    """

    bank: LycheeMemoryBank
    block_index: int
    prompt_ids: torch.LongTensor
    label: int
    example_id: str

    @property
    def block(self) -> LycheeMemoryBlock:
        block = self.bank.block(self.block_index)
        # Banks are written in inference mode; a training graph may not save inference tensors, so copy.
        return LycheeMemoryBlock(block.keys.clone(), block.values.clone(), block.mask.clone(), block.span)


def collate_gate_rows(rows: list[GateRow]) -> dict:
    return {
        "blocks": [row.block for row in rows],
        "prompts": [row.prompt_ids for row in rows],
        "labels": torch.tensor([float(row.label) for row in rows]),
    }


def split_examples(
    examples: list[QAExample], eval_fraction: float, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """A deterministic document-level split: (train, held out), each non-empty."""
    if len(examples) < 2:
        raise ValueError(f"Gate training needs at least 2 examples (train + held out), got {len(examples)}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held_out = min(max(1, round(eval_fraction * len(examples))), len(examples) - 1)
    return [examples[i] for i in order[held_out:]], [examples[i] for i in order[:held_out]]


def build_gate_rows(
    model, tokenizer, examples: list[QAExample], teacher: str = "gold", bank_dir: str | None = None
) -> list[GateRow]:
    """Compresses every example's document (compressor adapter, no gradients) and labels each block.

    Args:
        model (`LycheeMemoryForCausalLM`): the model whose compressor writes the blocks.
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): examples with `supporting` spans.
        teacher (`str`): `"gold"` or `"initial"` (see the module docstring).
        bank_dir (`str`, *optional*): keep each document's bank on disk in a new subfolder of this folder (named
            after the example) instead of in host memory.

    Returns:
        `list[GateRow]`: one row per block of every document.
    """
    if teacher not in TEACHERS:
        raise ValueError(f"teacher={teacher!r} is not one of {TEACHERS}.")
    unsupported = [example.id for example in examples if not example.supporting]
    if unsupported:
        raise ValueError(
            f"{len(unsupported)} example(s) name no supporting passage (e.g. {unsupported[0]!r}): gate training "
            "needs the location of the gold facts (a 'supporting' field in JSONL, supporting_facts in HotpotQA)."
        )
    rows = []
    progress = logging.tqdm(examples, desc="compressing gate examples", unit="document", disable=len(examples) < 4)
    for example in progress:
        rows += _example_rows(model, tokenizer, example, teacher, bank_dir)
    return rows


def _example_rows(model, tokenizer, example: QAExample, teacher: str, bank_dir: str | None) -> list[GateRow]:
    config = model.config
    ids = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
    if bank_dir is None:
        bank = model.compress(ids, show_progress=False, offload_to_cpu=True)
    else:
        # In the model's own dtype: the gate trains on the blocks exactly as `generate` computes them.
        exact = str(model.dtype).replace("torch.", "")
        folder = Path(bank_dir) / _folder_name(example.id)
        bank = compress_to_disk(model, ids, folder, show_progress=False, bank_dtype=exact)
    related = set(supporting_chunks(example, tokenizer, config.chunk_size))
    memories = gold_memory_texts(example, tokenizer, config.chunk_size, len(bank))
    question = torch.tensor(tokenizer.encode(example.question, add_special_tokens=False))
    initial = torch.tensor(config.initial_memory_ids or [], dtype=torch.long)
    rows = []
    for index in range(len(bank)):
        seen = memories[index - 1] if index else ""  # the gate judges a block before reading it
        if teacher == "gold" and seen:
            memory = torch.tensor(tokenizer.encode(seen, add_special_tokens=False)[-config.memory_budget :])
        else:
            memory = initial
        rows.append(GateRow(bank, index, gate_prompt(config, question, memory), int(index in related), example.id))
    return rows


def _folder_name(example_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in example_id)


class GateTrainer(Trainer):
    """A `Trainer` for the gate adapter: weighted BCE on logit(yes) - logit(no) of each (block, prompt) row."""

    # The loss is a per-batch mean, so the Trainer must divide it by the accumulation steps; left to its guess
    # (a `labels` entry and a model forward taking **kwargs) it takes the loss as already scaled and does not.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, positive_weight: float = 1.0, **kwargs):
        super().__init__(*args, data_collator=collate_gate_rows, **kwargs)
        self.positive_weight = positive_weight

    def gate_logits(self, model, inputs: dict) -> torch.Tensor:
        lychee = self.accelerator.unwrap_model(model)
        return lychee.gate.logits(lychee, inputs["blocks"], inputs["prompts"], forward=model)

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        logits = self.gate_logits(model, inputs)
        labels = inputs["labels"].to(logits.device, logits.dtype)
        weight = torch.tensor(self.positive_weight, device=logits.device, dtype=logits.dtype)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)
        return (loss, logits) if return_outputs else loss

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        with torch.no_grad():
            loss, logits = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach(), logits.detach().float(), inputs["labels"]


@dataclass
class GateTrainingResult:
    """What `train_gate` returns.

    Attributes:
        metrics (`dict`): held-out `precision`, `recall`, `f1`, `accuracy`, `auroc`, rates and `n` (rows).
        metrics_before (`dict`): the same on the same rows before training (the adapter's starting point).
        train_rows (`int`), eval_rows (`int`), positive_weight (`float`): the run's data and class weight.
        trainer (`GateTrainer`): the trainer (log history in `trainer.state.log_history`).
    """

    metrics: dict
    metrics_before: dict
    train_rows: int
    eval_rows: int
    positive_weight: float
    trainer: GateTrainer = field(repr=False)


def train_gate(
    model,
    tokenizer,
    examples: list[QAExample],
    config: GateTrainingConfig,
    eval_examples: list[QAExample] | None = None,
    peft_config=None,
    resume_from_checkpoint: bool | str | None = None,
    callbacks: list | None = None,
) -> GateTrainingResult:
    """Trains the `gate` adapter of `model` in place and switches the model to the classifier gate.

    A model without a `gate` adapter gets a fresh one from `peft_config`; an existing one trains on. Every
    other weight is frozen. Save the result with `model.save_pretrained(folder)`: the gate adapter lands in
    `folder/gate/` in PEFT's layout.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its compressor writes the blocks the gate reads).
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): training examples with supporting passages; split by `eval_fraction`
            when `eval_examples` is not given.
        config (`GateTrainingConfig`): training settings.
        eval_examples (`list[QAExample]`, *optional*): held-out examples.
        peft_config (`peft.LoraConfig`, *optional*): the new gate adapter (default: `LoraArguments().lora_config()`,
            rank 8, alpha 16, every decoder projection).
        resume_from_checkpoint (`bool` or `str`, *optional*): continue an interrupted run from the last
            checkpoint in `config.output_dir` (`True`) or from this checkpoint folder: weights, optimizer, scheduler,
            RNG and step restored, so the result equals one uninterrupted run (needs `save_strategy="steps"`).
        callbacks (`list[TrainerCallback]`, *optional*): e.g. `TimeLimitCallback(minutes)`.

    Returns:
        `GateTrainingResult` with the held-out metrics before and after training.
    """
    if eval_examples is None:
        examples, eval_examples = split_examples(examples, config.eval_fraction, config.seed)
    overlap = {e.id for e in examples} & {e.id for e in eval_examples}
    if overlap:
        raise ValueError(f"Training and held-out examples overlap ({sorted(overlap)[:3]}): use disjoint sets.")
    if model.config.gate_type != "classifier" or model.config.gate_label_ids is None:
        model.set_gate("classifier", tokenizer)
    add_role_lora(model, "gate", peft_config)
    train_only(model, ["gate"])
    model.eval()
    bank_dirs = (None, None) if config.bank_dir is None else (f"{config.bank_dir}/train", f"{config.bank_dir}/eval")
    train_rows = build_gate_rows(model, tokenizer, examples, config.teacher, bank_dirs[0])
    eval_rows = build_gate_rows(model, tokenizer, eval_examples, config.teacher, bank_dirs[1])
    positives = sum(row.label for row in train_rows)
    if positives == 0 or positives == len(train_rows):
        raise ValueError(
            f"The training rows hold {positives} related blocks out of {len(train_rows)}: both classes are needed "
            "(use longer documents, so that most blocks are unrelated, or more examples)."
        )
    positive_weight = config.positive_weight or (len(train_rows) - positives) / positives
    trainer = GateTrainer(
        model=model,
        args=config,
        train_dataset=ListDataset(train_rows),
        eval_dataset=ListDataset(eval_rows),
        positive_weight=positive_weight,
        callbacks=callbacks,
    )
    metrics_before = evaluate_gate(trainer, eval_rows, config.decision_threshold)
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(config.output_dir, resume_from_checkpoint))
    model.eval()
    metrics = evaluate_gate(trainer, eval_rows, config.decision_threshold)
    logger.info(f"gate held-out metrics: {metrics}")
    return GateTrainingResult(metrics, metrics_before, len(train_rows), len(eval_rows), positive_weight, trainer)


def evaluate_gate(trainer: GateTrainer, rows: list[GateRow], threshold: float) -> dict:
    """Precision / recall / F1 / AUROC of the gate on `rows` (P(related) = sigmoid of the trainer's logits)."""
    prediction = trainer.predict(ListDataset(rows))
    # torch's sigmoid saturates where 1 / (1 + math.exp(-x)) overflows (logits below about -710).
    scores = torch.sigmoid(torch.as_tensor(prediction.predictions, dtype=torch.float64).reshape(-1)).tolist()
    return classification_metrics(scores, [row.label for row in rows], threshold)
