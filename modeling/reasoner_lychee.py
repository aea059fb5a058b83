"""The reasoner loop: block by block, gate then rewrite the working memory; then answer from the memory alone.

Every decoding step goes through the public `GenerationMixin.generate` with a prefilled `DynamicCache` holding
the block's K/V, an explicit 2D attention mask over [block slots, prompt] and explicit position ids of the same
length (transformers 5 derives wrong positions for a prefix whose positions differ from its length otherwise).
"""

import copy
import time
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.utils import logging

from .adapters_lychee import role_adapter
from .compat_lychee import cache_kwargs
from .configuration_lychee import check_gate_policy
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock
from .prefix_lychee import block_prefix


@dataclass
class LycheeBlockTrace:
    """What happened at one block of one row.

    Attributes:
        block_index (`int`): position of the block in the document.
        span (`tuple[int, int]`): the block's source tokens [start, end).
        gate_score (`float`): P(related) from the gate.
        kept (`bool`): whether the reasoner read the block.
        gate_decision (`str`): why: `"related"` / `"unrelated"` (score vs threshold), `"last block"`
            (`gate_keep_last`) or `"block limit"` (related, but `gate_max_blocks` blocks were read already).
        memory_ids (`list[int]`): the working memory after this step (unchanged when skipped).
        tokens_decoded (`int`): tokens the memory update generated (0 when skipped).
        generated_ids (`list[int]`): those tokens, through the first stop id (empty when skipped): what the
            reasoner wrote, before pad/eos removal and the budget cut made it `memory_ids` (RL scores these).
        prompt_tokens (`int`): prompt tokens the memory update prefilled after the block (0 when skipped).
        compress_seconds / gate_seconds / reason_seconds (`float`): this block's own wall time. The gate scores
            the blocks ahead in batched passes (again only when the memory changes); each block is charged an
            equal share of the pass that scored it, whether or not it is read; scores thrown away because a
            memory update changed the memory are charged to that update's block. So the records add up to the
            call's gate time. Compression and reasoning are batched across rows, so rows of one batch share
            those figures.
        row (`int`): the batch row this record belongs to.
    """

    block_index: int
    span: tuple[int, int]
    gate_score: float
    kept: bool
    memory_ids: list[int]
    gate_decision: str = ""
    tokens_decoded: int = 0
    generated_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    compress_seconds: float = 0.0
    gate_seconds: float = 0.0
    reason_seconds: float = 0.0
    row: int = 0


@dataclass
class LycheeGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` of the final answer plus `trace`: one list of `LycheeBlockTrace` per row."""

    trace: list[list[LycheeBlockTrace]] | None = None


def build_prompt(pieces: list[list[int]], question: torch.LongTensor, memory: torch.LongTensor) -> torch.LongTensor:
    """piece 0 + question + piece 1 + memory + piece 2, as one 1-D tensor."""
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


def clean_memory(generated: torch.LongTensor, drop_ids: list[int], budget: int) -> torch.LongTensor:
    """The new memory: generated ids without pad/eos ids (other special tokens stay), last `budget` kept."""
    if drop_ids:
        generated = generated[~torch.isin(generated, torch.tensor(drop_ids, device=generated.device))]
    return generated[-budget:]


def stop_and_pad_ids(generation_config: GenerationConfig) -> tuple[list[int], int]:
    eos = generation_config.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    pad = generation_config.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    return eos, pad


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


@dataclass
class GatePolicy:
    """Which blocks the reasoner reads, given their gate scores.

    Attributes:
        threshold (`float`): a block is related when its score is at least this.
        max_blocks (`int`, *optional*): read at most this many blocks, the first related ones in document order;
            with `keep_last` the last block is one of them.
        keep_last (`bool`): always read the last block.
    """

    threshold: float = 0.5
    max_blocks: int | None = None
    keep_last: bool = False

    @classmethod
    def from_config(cls, config, **overrides) -> "GatePolicy":
        """The config's policy, with `gate_threshold` / `gate_max_blocks` / `gate_keep_last` overrides."""
        policy = cls(config.gate_threshold, config.gate_max_blocks, config.gate_keep_last)
        for name, value in overrides.items():
            setattr(policy, name.removeprefix("gate_"), value)
        check_gate_policy(policy.threshold, policy.max_blocks)
        return policy

    def decide(self, score: float, is_last: bool, kept_so_far: int) -> tuple[bool, str]:
        """(read the block?, why) for one block."""
        if is_last and self.keep_last:
            return True, "last block"
        if score < self.threshold:
            return False, "unrelated"
        # With keep_last, one read stays reserved for the last block.
        allowance = None if self.max_blocks is None else self.max_blocks - int(self.keep_last and not is_last)
        if allowance is not None and kept_so_far >= allowance:
            return False, "block limit"
        return True, "related"


GATE_POLICY_KWARGS = ("gate_threshold", "gate_max_blocks", "gate_keep_last")


@dataclass
class ReasonerLoop:
    """One call's loop state (never stored on the model, so calls and threads never share memory)."""

    model: "torch.nn.Module"
    update_config: GenerationConfig
    show_progress: bool | None = None
    policy: GatePolicy | None = None
    traces: list[list[LycheeBlockTrace]] = field(default_factory=list)

    def run(
        self,
        questions: list[torch.LongTensor],
        banks: list[LycheeMemoryBank],
        compress_seconds: list[list[float]] | None = None,
    ) -> list[torch.LongTensor]:
        """Scans every row's blocks in order and returns each row's final working memory (1-D ids)."""
        device = self.model.device
        initial = self.model.config.initial_memory_ids or []
        memories = [torch.tensor(initial, dtype=torch.long, device=device) for _ in banks]
        self.traces = [[] for _ in banks]
        self._scores = [None] * len(banks)  # per row: gate scores of blocks scored_from.., None once stale
        self._scored_from = [0] * len(banks)
        self._score_share = [0.0] * len(banks)  # per row: seconds of the last scoring pass per block it scored
        self._kept = [0] * len(banks)
        self.policy = self.policy or GatePolicy.from_config(self.model.config)
        steps = max(len(bank) for bank in banks)
        progress = logging.tqdm(
            range(steps),
            desc="reasoning over blocks",
            unit="block",
            disable=not _wants_progress(self.show_progress, steps),
        )
        for step in progress:
            records = {
                row: self._gate(row, bank, step, questions[row], memories[row])
                for row, bank in enumerate(banks)
                if step < len(bank)
            }
            for record in records.values():
                record.compress_seconds = compress_seconds[record.row][step] if compress_seconds else 0.0
            active = [row for row, record in records.items() if record.kept]
            if active:
                started = time.perf_counter()
                prompt_lengths = [
                    self.model.config.template_length("update") + questions[r].numel() + memories[r].numel()
                    for r in active
                ]
                with role_adapter(self.model, "reasoner"):
                    new_memories, generated = self.update_memories(
                        [banks[r].block(step) for r in active],
                        [questions[r] for r in active],
                        [memories[r] for r in active],
                    )
                elapsed = time.perf_counter() - started
                for row, memory, written in zip(active, new_memories, generated):
                    changed = not torch.equal(memory, memories[row])
                    memories[row] = memory
                    if self.model.gate.reads_memory and changed:  # the blocks ahead need scores for the new memory
                        records[row].gate_seconds += self._discard_scores(row, step)
                    records[row].generated_ids, records[row].tokens_decoded = written, len(written)
                    records[row].reason_seconds = elapsed
                    records[row].prompt_tokens = prompt_lengths[active.index(row)]
            for row, record in records.items():
                record.memory_ids = memories[row].tolist()
                self.traces[row].append(record)
        return memories

    def _gate(
        self, row: int, bank: LycheeMemoryBank, step: int, question: torch.LongTensor, memory: torch.LongTensor
    ) -> LycheeBlockTrace:
        """Decides whether `row` reads block `step`, rescoring the blocks ahead only if its memory changed."""
        if self._scores[row] is None:
            started = time.perf_counter()
            with role_adapter(self.model, "gate"):
                scores = self.model.gate.score_blocks(self.model, bank, step, question, memory)
            self._scores[row], self._scored_from[row] = scores.float().cpu(), step
            self._score_share[row] = (time.perf_counter() - started) / max(len(scores), 1)
        score = float(self._scores[row][step - self._scored_from[row]])
        kept, decision = self.policy.decide(score, step == len(bank) - 1, self._kept[row])
        self._kept[row] += int(kept)
        return LycheeBlockTrace(
            block_index=step,
            span=bank.spans[step],
            gate_score=score,
            kept=kept,
            gate_decision=decision,
            memory_ids=[],
            gate_seconds=self._score_share[row],
            row=row,
        )

    def _discard_scores(self, row: int, step: int) -> float:
        """Drops `row`'s scores of the blocks after `step`; returns the scoring seconds they had cost."""
        unused = len(self._scores[row]) - (step - self._scored_from[row] + 1)
        self._scores[row] = None
        return unused * self._score_share[row]

    def update_memories(
        self, blocks: list[LycheeMemoryBlock], questions: list[torch.LongTensor], memories: list[torch.LongTensor]
    ) -> tuple[list[torch.LongTensor], list[list[int]]]:
        """One batched memory update: each row reads its block as prefix and writes a new memory.

        Returns:
            `(memories, generated)`: per row the new memory (1-D ids) and the generated ids through the first stop.
        """
        config = self.model.config
        eos_ids, pad_id = stop_and_pad_ids(self.update_config)
        prompts = [build_prompt(config.update_template_ids, q, m) for q, m in zip(questions, memories)]
        prompt_ids, prompt_mask = left_pad(prompts, pad_id)
        prefix = block_prefix(self.model, blocks)
        sequences = GenerationMixin.generate(
            self.model,
            input_ids=prompt_ids,
            **cache_kwargs(prefix.cache),
            generation_config=self.update_config,
            **prefix.generate_inputs(prompt_mask),
        )
        generated = sequences[:, prompt_ids.shape[1] :]
        drop = sorted(set(eos_ids) | {pad_id})
        new_memories = [clean_memory(row, drop, config.memory_budget) for row in generated]
        written = [row[: count_decoded(row, eos_ids, pad_id)].tolist() for row in generated]
        return new_memories, written


def count_decoded(generated: torch.LongTensor, eos_ids: list[int], pad_id: int) -> int:
    """Tokens generated up to and including the first stop id (the rest is padding of finished rows)."""
    stops = torch.isin(generated, torch.tensor(eos_ids or [pad_id], device=generated.device)).nonzero()
    return int(stops[0, 0]) + 1 if len(stops) else generated.numel()


def _wants_progress(show_progress: bool | None, total: int) -> bool:
    return show_progress if show_progress is not None else total >= 8
