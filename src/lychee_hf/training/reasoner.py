"""Supervised steps for the reasoner adapter, from the gold-fact teacher (see `teacher.py`), and the trainer that
fits them.

An example gives one step per block (read the block as prefix, then the memory-update prompt with the previous
teacher memory; target: the teacher memory after the block) and one final step (the final-answer prompt with
the last teacher memory, no block; target: the first gold answer). Each target ends with the eos token, so the
adapter also learns when to stop. Rows feed a plain `transformers.Trainer` on the model: `ReasonerStepCollator`
builds `input_ids`, `attention_mask`, `labels` (-100 over the prompt) and `memory_blocks`, which
`LycheeMemoryForCausalLM.forward` reads as prefix.

Steps hold their chunk's token ids, not its K/V: the collator compresses the chunks of each batch (a block depends
on its own chunk only), so thousands of steps fit in memory (a lossless 256-token block of SmolLM2-135M is 12 MB).

Most blocks of a long document hold no supporting fact, so most teacher steps copy the previous memory, and
before the first fact that memory is empty. Trained on all of them, a small reasoner learns to write an empty
memory even after the gate kept the block that holds the answer (measured on the default, issue 18);
`unchanged_fraction` keeps only a seeded share of those steps.
"""

import random
from dataclasses import dataclass

import torch
from transformers import Trainer, TrainingArguments

from ..data import QAExample
from ..modeling import LycheeMemoryBlock, build_prompt, chunk_spans, stop_and_pad_ids
from .teacher import gold_memory_texts
from .trainer_utils import IGNORE_INDEX, ListDataset, checkpoint_to_resume, start_reasoner_training


@dataclass
class ReasonerStep:
    """One supervised reasoner step.

    Attributes:
        chunk_ids (`torch.LongTensor` or `None`): (C,) the chunk whose block is read as prefix (`None` for the
            final answer).
        span (`tuple[int, int]` or `None`): the chunk's [start, end) token span in its document.
        prompt_ids (`torch.LongTensor`): (L,) the prompt (not trained on).
        target_ids (`torch.LongTensor`): (T,) what the reasoner should write, eos included.
    """

    chunk_ids: torch.LongTensor | None
    span: tuple[int, int] | None
    prompt_ids: torch.LongTensor
    target_ids: torch.LongTensor

    @property
    def reads_block(self) -> bool:
        return self.chunk_ids is not None


def build_reasoner_steps(
    model, tokenizer, examples: list[QAExample], unchanged_fraction: float = 1.0, seed: int = 0
) -> list[ReasonerStep]:
    """The teacher steps of `examples`: one per block (those that change the memory, plus a seeded
    `unchanged_fraction` of the others) and the final answer.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its config gives chunk size, prompts and memory budget).
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): examples with `supporting` spans and gold `answers`.
        unchanged_fraction (`float`, *optional*, defaults to 1.0): share of the block steps whose target is the
            previous memory (no new fact in the block) to keep; 1.0 keeps every block step.
        seed (`int`, *optional*, defaults to 0): seeds which unchanged steps are kept.

    Returns:
        `list[ReasonerStep]`, example by example, in document order.
    """
    if not 0.0 <= unchanged_fraction <= 1.0:
        raise ValueError(f"unchanged_fraction must be in [0, 1], got {unchanged_fraction}.")
    config = model.config
    eos_ids, _ = stop_and_pad_ids(model.generation_config)
    eos = torch.tensor(eos_ids[:1], dtype=torch.long)
    chooser = random.Random(f"lychee-teacher/{seed}")
    steps = []
    for example in examples:
        ids = torch.tensor(tokenizer.encode(example.context, add_special_tokens=False), dtype=torch.long)
        spans = chunk_spans(ids.numel(), config.chunk_size)
        question = torch.tensor(tokenizer.encode(example.question, add_special_tokens=False), dtype=torch.long)
        memory = torch.tensor(config.initial_memory_ids or [], dtype=torch.long)
        for (start, end), text in zip(spans, gold_memory_texts(example, tokenizer, config.chunk_size, len(spans))):
            target = torch.tensor(tokenizer.encode(text, add_special_tokens=False)[-config.memory_budget :]).long()
            target = target if text else memory  # nothing new yet: keep the previous memory
            unchanged = torch.equal(target, memory)
            if not unchanged or chooser.random() < unchanged_fraction:
                prompt = build_prompt(config.update_template_ids, question, memory)
                steps.append(ReasonerStep(ids[start:end], (start, end), prompt, torch.cat([target, eos])))
            memory = target
        answer = torch.tensor(tokenizer.encode(example.answers[0], add_special_tokens=False), dtype=torch.long)
        final_prompt = build_prompt(config.final_template_ids, question, memory)
        steps.append(ReasonerStep(None, None, final_prompt, torch.cat([answer, eos])))
    return steps


def collate_reasoner_steps(steps: list[ReasonerStep], pad_id: int = 0, model=None) -> dict:
    """Left-padded `input_ids` = prompt + target, `labels` on the target only, and the blocks' `memory_blocks`.

    Args:
        steps (`list[ReasonerStep]`): all block steps or all final steps (use batch size 1 with gradient
            accumulation, or group them).
        pad_id (`int`, *optional*, defaults to 0): the padding id.
        model (`LycheeMemoryForCausalLM`, *optional*): compresses the block steps' chunks (no gradients);
            required when the steps read blocks.

    Returns:
        `dict` with `input_ids`, `attention_mask`, `labels` and, for block steps, `memory_blocks`.
    """
    with_block = {step.reads_block for step in steps}
    if len(with_block) != 1:
        raise ValueError("A batch mixes block steps and final steps: use per_device_train_batch_size=1.")
    sequences = [torch.cat([step.prompt_ids, step.target_ids]) for step in steps]
    length = max(sequence.numel() for sequence in sequences)
    input_ids = torch.full((len(steps), length), pad_id, dtype=torch.long)
    labels = torch.full((len(steps), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(steps), length), dtype=torch.long)
    for row, (step, sequence) in enumerate(zip(steps, sequences)):
        start = length - sequence.numel()
        input_ids[row, start:] = sequence
        attention_mask[row, start:] = 1
        labels[row, length - step.target_ids.numel() :] = step.target_ids
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if with_block == {True}:
        if model is None:
            raise ValueError("These steps read blocks: pass the model that compresses their chunks (model=...).")
        batch["memory_blocks"] = compress_step_chunks(model, steps)
    return batch


def compress_step_chunks(model, steps: list[ReasonerStep]) -> list[LycheeMemoryBlock]:
    """The blocks of the steps' chunks, as `compress` would make them, without gradients (the teacher trains the
    reasoner only)."""
    device = model.device
    with torch.no_grad():  # blocks made here carry no graph
        return model.compress_chunks([step.chunk_ids.to(device) for step in steps], [step.span for step in steps])


class ReasonerStepCollator:
    """`collate_reasoner_steps` bound to a model and pad id, for `Trainer(data_collator=...)`."""

    def __init__(self, model, pad_id: int | None = None):
        self.model = model
        self.pad_id = pad_id if pad_id is not None else stop_and_pad_ids(model.generation_config)[1]

    def __call__(self, steps: list[ReasonerStep]) -> dict:
        return collate_reasoner_steps(steps, self.pad_id, self.model)


def train_reasoner_sft(
    model,
    tokenizer,
    examples: list[QAExample],
    args: TrainingArguments,
    unchanged_fraction: float = 1.0,
    peft_config=None,
    callbacks: list | None = None,
    resume_from_checkpoint: bool | str | None = None,
) -> Trainer:
    """Fits the `reasoner` adapter of `model` in place to the gold-fact teacher's steps of `examples`.

    A model without a `reasoner` adapter gets a fresh one from `peft_config`; an existing one trains on. Every
    other weight is frozen. Steps run one per micro-batch (block and final steps have different inputs): set
    `gradient_accumulation_steps` for the batch size.

    Args:
        model (`LycheeMemoryForCausalLM`): the model.
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): training examples with `supporting` spans.
        args (`TrainingArguments`): the trainer's settings (`LycheeTrainingArguments` has the right defaults).
        unchanged_fraction (`float`, *optional*, defaults to 1.0): see `build_reasoner_steps`.
        peft_config (`peft.LoraConfig`, *optional*): the new adapter (default: rank 8, alpha 16, every decoder
            projection).
        callbacks (`list`, *optional*): trainer callbacks (e.g. `TimeLimitCallback`).
        resume_from_checkpoint (`bool` or `str`, *optional*): continue from the last checkpoint in
            `args.output_dir` (`True`) or from this checkpoint folder (needs `save_strategy="steps"`).

    Returns:
        `transformers.Trainer`: the finished trainer (`trainer.state.log_history` holds the losses).
    """
    if args.per_device_train_batch_size != 1:
        raise ValueError(
            "train_reasoner_sft runs one step per micro-batch (block steps and final steps have different inputs): "
            "set per_device_train_batch_size=1 and use gradient_accumulation_steps for the batch size."
        )
    steps = build_reasoner_steps(model, tokenizer, examples, unchanged_fraction, seed=args.seed)
    start_reasoner_training(model, peft_config)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ListDataset(steps),
        data_collator=ReasonerStepCollator(model),
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(args.output_dir, resume_from_checkpoint))
    model.eval()
    return trainer
