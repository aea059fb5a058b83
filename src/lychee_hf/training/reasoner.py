"""Supervised steps for the reasoner adapter, from the gold-fact teacher (see `teacher.py`).

An example gives one step per block (read the block as prefix, then the memory-update prompt with the previous
teacher memory; target: the teacher memory after the block) and one final step (the final-answer prompt with
the last teacher memory, no block; target: the first gold answer). Each target ends with the eos token, so the
adapter also learns when to stop. Rows feed a plain `transformers.Trainer` on a PEFT model: the collator
builds `input_ids`, `attention_mask`, `labels` (-100 over the prompt) and `memory_blocks`, which
`LycheeMemoryForCausalLM.forward` reads as prefix.
"""

from dataclasses import dataclass

import torch

from ..data import QAExample
from ..modeling.memory_bank_lychee import LycheeMemoryBlock
from ..modeling.prompts_lychee import build_prompt, stop_and_pad_ids
from .data import IGNORE_INDEX
from .teacher import gold_memory_texts


@dataclass
class ReasonerStep:
    """One supervised reasoner step.

    Attributes:
        block (`LycheeMemoryBlock` or `None`): the block read as prefix (`None` for the final answer).
        prompt_ids (`torch.LongTensor`): (L,) the prompt (not trained on).
        target_ids (`torch.LongTensor`): (T,) what the reasoner should write, eos included.
    """

    block: LycheeMemoryBlock | None
    prompt_ids: torch.LongTensor
    target_ids: torch.LongTensor


def build_reasoner_steps(model, tokenizer, examples: list[QAExample]) -> list[ReasonerStep]:
    """Compresses each example (no gradients) and writes its teacher steps: one per block plus the final one.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (its compressor writes the blocks; its config the prompts).
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): examples with `supporting` spans and gold `answers`.

    Returns:
        `list[ReasonerStep]`.
    """
    config = model.config
    eos_ids, _ = stop_and_pad_ids(model.generation_config)
    eos = torch.tensor(eos_ids[:1], dtype=torch.long)
    steps = []
    for example in examples:
        ids = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
        bank = model.compress(ids, show_progress=False, offload_to_cpu=True)
        question = torch.tensor(tokenizer.encode(example.question, add_special_tokens=False))
        memory = torch.tensor(config.initial_memory_ids or [], dtype=torch.long)
        for index, text in enumerate(gold_memory_texts(example, tokenizer, config.chunk_size, len(bank))):
            target = torch.tensor(tokenizer.encode(text, add_special_tokens=False)[-config.memory_budget :])
            target = target.long() if text else memory  # nothing new yet: keep the previous memory
            block = bank.block(index)
            # Out of inference mode: training graphs may not save inference tensors.
            block = LycheeMemoryBlock(block.keys.clone(), block.values.clone(), block.mask.clone(), block.span)
            prompt = build_prompt(config.update_template_ids, question, memory)
            steps.append(ReasonerStep(block, prompt, torch.cat([target, eos])))
            memory = target
        answer = torch.tensor(tokenizer.encode(example.answers[0], add_special_tokens=False), dtype=torch.long)
        final_prompt = build_prompt(config.final_template_ids, question, memory)
        steps.append(ReasonerStep(None, final_prompt, torch.cat([answer, eos])))
    return steps


def collate_reasoner_steps(steps: list[ReasonerStep], pad_id: int = 0) -> dict:
    """Left-padded `input_ids` = prompt + target, `labels` on the target only, and `memory_blocks` if any.

    A batch must be all block steps or all final steps (use batch size 1 with gradient accumulation, or group).
    """
    with_block = {step.block is not None for step in steps}
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
        batch["memory_blocks"] = [step.block for step in steps]
    return batch
