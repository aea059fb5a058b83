"""The reasoner loop: block by block, gate then rewrite the working memory; then answer from the memory alone.

Every decoding step goes through the public `GenerationMixin.generate` with a prefilled `DynamicCache` holding
the block's K/V, an explicit 2D attention mask over [block slots, prompt] and explicit position ids of the same
length (transformers 5 derives wrong positions for a prefix whose positions differ from its length otherwise).
The loop records every turn in the trace, the exact prompt ids it fed to `generate` included, so that training
reads the prompts the model read instead of rebuilding them.
"""

import time
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.utils import logging

from .adapters_lychee import role_adapter
from .compat_lychee import cache_kwargs
from .gate_lychee import GatePolicy
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock
from .prefix_lychee import block_prefix
from .prompts_lychee import build_prompt, clean_memory, count_decoded, left_pad, stop_and_pad_ids


@dataclass
class LycheeBlockTrace:
    """What happened at one block of one row.

    Attributes:
        block_index (`int`): position of the block in the document.
        span (`tuple[int, int]`): the block's source tokens [start, end).
        gate_score (`float`): P(related) from the gate.
        kept (`bool`): whether the reasoner read the block.
        gate_decision (`str`): why: `"related"` / `"unrelated"` (score vs threshold), `"last block"`
            (`gate_keep_last`), `"block limit"` (related, but `gate_max_blocks` blocks were read already) or
            `"revisit"` (skipped by the scan, read on the second look against the final memory: `gate_revisit`).
        memory_ids (`list[int]`): the working memory after this step (unchanged when skipped).
        tokens_decoded (`int`): tokens the memory update generated (0 when skipped).
        generated_ids (`list[int]`): those tokens, through the first stop id (empty when skipped): what the
            reasoner wrote, before pad/eos removal and the budget cut made it `memory_ids` (RL scores these).
        prompt_ids (`list[int]`): the memory update's prompt after the block, exactly as fed to `generate`
            (without the batch's left padding; empty when skipped): update template, question, previous memory.
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
    prompt_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    compress_seconds: float = 0.0
    gate_seconds: float = 0.0
    reason_seconds: float = 0.0
    row: int = 0

    def to_dict(self, tokenizer) -> dict:
        """The record as plain JSON values: what `lychee-hf ask --json` and evaluation's predictions write.

        Args:
            tokenizer (`PreTrainedTokenizerBase`): decodes the working memory into `memory`.

        Returns:
            `dict` with `block`, `span`, `gate_score` (4 decimals), `kept`, `gate_decision`, `memory_tokens`,
            `memory` (text), `tokens_decoded`, `prompt_ids`, `prompt_tokens`, `compress_seconds` and `seconds`
            (gate + reasoning, 3 decimals).
        """
        return {
            "block": self.block_index,
            "span": list(self.span),
            "gate_score": round(self.gate_score, 4),
            "kept": self.kept,
            "gate_decision": self.gate_decision,
            "memory_tokens": len(self.memory_ids),
            "memory": tokenizer.decode(self.memory_ids, skip_special_tokens=True),
            "tokens_decoded": self.tokens_decoded,
            "prompt_ids": list(self.prompt_ids),
            "prompt_tokens": self.prompt_tokens,
            "compress_seconds": round(self.compress_seconds, 3),
            "seconds": round(self.gate_seconds + self.reason_seconds, 3),
        }


class LycheeTrace(list):
    """One row's trace: its `LycheeBlockTrace` records in reading order (a plain list of them), plus the final
    answer turn. The scan's records come first, one per block in document order; with `gate_revisit`, a record
    per block read on the second look follows them (that block's index appears twice).

    Attributes:
        answer_prompt_ids (`list[int]`): the final answer's prompt (final template, question, last working
            memory), exactly as fed to `generate`, without the batch's left padding.
        answer_ids (`list[int]`): the answer's tokens through the first stop id.
        answer_seconds (`float`): wall time of the final answer turn (rows of a batch share it). The blocks'
            `seconds` plus this add up to the call's time after compression.
    """

    def __init__(
        self,
        records=(),
        answer_prompt_ids: list[int] | None = None,
        answer_ids: list[int] | None = None,
        answer_seconds: float = 0.0,
    ):
        super().__init__(records)
        self.answer_prompt_ids = answer_prompt_ids or []
        self.answer_ids = answer_ids or []
        self.answer_seconds = answer_seconds

    def to_dict(self, tokenizer) -> dict:
        """The row as plain JSON values.

        This is the one schema of a trace: `lychee-hf ask --json`, evaluation's predictions and the Python API
        write the same keys.

        Returns:
            `dict` with `answer` (decoded, special tokens skipped, stripped), `answer_prompt_ids`,
            `answer_prompt_tokens`, `answer_tokens` (decoded answer tokens through the first stop),
            `answer_seconds` (3 decimals) and `trace` (`LycheeBlockTrace.to_dict` of every block read or skipped).
        """
        return {
            "answer": tokenizer.decode(self.answer_ids, skip_special_tokens=True).strip(),
            "answer_prompt_ids": list(self.answer_prompt_ids),
            "answer_prompt_tokens": len(self.answer_prompt_ids),
            "answer_tokens": len(self.answer_ids),
            "answer_seconds": round(self.answer_seconds, 3),
            "trace": [record.to_dict(tokenizer) for record in self],
        }


@dataclass
class LycheeGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` of the final answer plus `trace`: one `LycheeTrace` per row."""

    trace: list[LycheeTrace] | None = None


@dataclass
class _RowState:
    """What the scan keeps per batch row between blocks (one place, so no row's state is a loose list).

    Attributes:
        scores (`torch.Tensor`, *optional*): gate scores of the blocks from `scored_from` on; None once stale
            (a memory update changed what a memory-reading gate would say).
        first_pass (`torch.Tensor`, *optional*): (len(bank),) the gate's first scores from block 0 on; the
            question's share of every rescoring is taken from them.
        scored_from (`int`): the block `scores[0]` belongs to.
        score_share (`float`): seconds of the last scoring pass per block it scored (charged to each block).
        kept (`int`): blocks read so far (for `gate_max_blocks`).
    """

    scores: torch.Tensor | None = None
    first_pass: torch.Tensor | None = None
    scored_from: int = 0
    score_share: float = 0.0
    kept: int = 0


@dataclass
class ReasonerLoop:
    """One call's loop state (never stored on the model, so calls and threads never share memory).

    Attributes:
        model (`LycheeMemoryForCausalLM`): the model (shared backbone, gate, role adapters).
        update_config (`GenerationConfig`): decoding of the memory updates.
        answer_config (`GenerationConfig`): decoding of the final answer.
        show_progress (`bool`, *optional*): progress bar over blocks (default: on for 8+).
        policy (`GatePolicy`, *optional*): keep/skip rule (default: the config's).
        traces (`list[LycheeTrace]`): filled by `run`, one per row.
    """

    model: "torch.nn.Module"
    update_config: GenerationConfig
    answer_config: GenerationConfig
    show_progress: bool | None = None
    policy: GatePolicy | None = None
    traces: list[LycheeTrace] = field(default_factory=list)

    def run(
        self,
        questions: list[torch.LongTensor],
        banks: list[LycheeMemoryBank],
        compress_seconds: list[list[float]] | None = None,
        **generate_kwargs,
    ):
        """Reads every row's blocks, then answers every row from its final working memory.

        Args:
            questions (`list[torch.LongTensor]`): one 1-D question per row, without padding.
            banks (`list[LycheeMemoryBank]`): one bank per row.
            compress_seconds (`list[list[float]]`, *optional*): per row and block, the compression time to record.
            **generate_kwargs: passed to the final answer's `generate` (streamer, logits processors, ...);
                `synced_gpus` to the memory updates' too.

        Returns:
            `(answers, output)`: (B, T) answer ids (padded after the first stop) and the final answer's `generate`
            output (a tensor, or a `GenerateDecoderOnlyOutput` with `return_dict_in_generate`).
        """
        memories = self.read_blocks(questions, banks, compress_seconds, generate_kwargs.get("synced_gpus"))
        return self.answer(questions, memories, **generate_kwargs)

    def read_blocks(
        self,
        questions: list[torch.LongTensor],
        banks: list[LycheeMemoryBank],
        compress_seconds: list[list[float]] | None = None,
        synced_gpus: bool | None = None,
    ) -> list[torch.LongTensor]:
        """Scans every row's blocks in order and returns each row's final working memory (1-D ids).

        `synced_gpus` goes to every memory update's `generate` (`None`: transformers' default, on under FSDP or
        ZeRO-3 with several processes).
        """
        device = self.model.device
        initial = self.model.config.initial_memory_ids or []
        memories = [torch.tensor(initial, dtype=torch.long, device=device) for _ in banks]
        self.traces = [LycheeTrace() for _ in banks]
        self._rows = [_RowState() for _ in banks]
        self.policy = self.policy or GatePolicy.from_config(self.model.config)
        if self.policy.revisit and not self.model.gate.reads_memory:
            raise ValueError(
                f"gate_revisit needs a gate that reads the working memory, and gate_type="
                f"{self.model.config.gate_type!r} scores blocks without it (a second look would score them as the "
                "scan did): use gate_type='query_likelihood' with gate_reads_memory=True, or the classifier gate, "
                "or leave gate_revisit off."
            )
        steps = max(len(bank) for bank in banks)
        progress = logging.tqdm(
            range(steps),
            desc="reasoning over blocks",
            unit="block",
            disable=not wants_progress(self.show_progress, steps),
        )
        for step in progress:
            records = {
                row: self._gate(row, bank, step, questions[row], memories[row])
                for row, bank in enumerate(banks)
                if step < len(bank)
            }
            for record in records.values():
                record.compress_seconds = compress_seconds[record.row][step] if compress_seconds else 0.0
            self._update(records, banks, questions, memories, synced_gpus)
            for row, record in records.items():
                record.memory_ids = memories[row].tolist()
                self.traces[row].append(record)
        if self.policy.revisit:
            self._revisit(banks, questions, memories, synced_gpus)
        return memories

    def _update(
        self,
        records: dict[int, LycheeBlockTrace],
        banks: list[LycheeMemoryBank],
        questions: list[torch.LongTensor],
        memories: list[torch.LongTensor],
        synced_gpus: bool | None,
    ) -> None:
        """One batched memory update over the rows whose record is kept; `memories` and records updated in place."""
        active = [row for row, record in records.items() if record.kept]
        if not active:
            return
        started = time.perf_counter()
        with role_adapter(self.model, "reasoner"):
            new_memories, generated, prompts = self.update_memories(
                [banks[r].block(records[r].block_index) for r in active],
                [questions[r] for r in active],
                [memories[r] for r in active],
                synced_gpus,
            )
        elapsed = time.perf_counter() - started
        for row, memory, written, prompt in zip(active, new_memories, generated, prompts):
            changed = not torch.equal(memory, memories[row])
            memories[row] = memory
            if self.model.gate.reads_memory and changed and self._rows[row].scores is not None:
                # the blocks ahead need scores for the new memory
                records[row].gate_seconds += self._discard_scores(row, records[row].block_index)
            records[row].generated_ids, records[row].tokens_decoded = written, len(written)
            records[row].reason_seconds = elapsed
            records[row].prompt_ids, records[row].prompt_tokens = prompt, len(prompt)

    def _revisit(
        self,
        banks: list[LycheeMemoryBank],
        questions: list[torch.LongTensor],
        memories: list[torch.LongTensor],
        synced_gpus: bool | None,
    ) -> None:
        """The second look (`gate_revisit`): each row's skipped blocks are scored again against its final memory,
        and the ones now related are read in document order, once each, within `gate_max_blocks`.

        It reaches what an in-order scan cannot: a chain whose second fact comes before the fact that names its
        entity. Scores are not refreshed between these reads. The scoring pass is charged to the blocks it reads
        (else to the scan's last record), so a row's records still add up to its gate time.
        """
        queues = {}
        for row, bank in enumerate(banks):
            self._rows[row].scores = None  # no blocks are ahead any more
            skipped = [record.block_index for record in self.traces[row] if not record.kept]
            if not skipped:
                continue
            started = time.perf_counter()
            with role_adapter(self.model, "gate"):
                scores = self.model.gate.revisit_scores(
                    self.model, bank, skipped, questions[row], memories[row], self._rows[row].first_pass
                )
            seconds = time.perf_counter() - started
            queue = []
            for block, score in zip(skipped, scores.tolist()):
                if self.policy.revisits(score, self._rows[row].kept):
                    self._rows[row].kept += 1
                    queue.append(
                        LycheeBlockTrace(
                            block_index=block,
                            span=bank.spans[block],
                            gate_score=score,
                            kept=True,
                            memory_ids=[],
                            gate_decision="revisit",
                            row=row,
                        )
                    )
            for record in queue or self.traces[row][-1:]:
                record.gate_seconds += seconds / max(len(queue), 1)
            queues[row] = queue
        for turn in range(max((len(queue) for queue in queues.values()), default=0)):
            records = {row: queue[turn] for row, queue in queues.items() if turn < len(queue)}
            self._update(records, banks, questions, memories, synced_gpus)
            for row, record in records.items():
                record.memory_ids = memories[row].tolist()
                self.traces[row].append(record)

    def _gate(
        self, row: int, bank: LycheeMemoryBank, step: int, question: torch.LongTensor, memory: torch.LongTensor
    ) -> LycheeBlockTrace:
        """Decides whether `row` reads block `step`, rescoring the blocks ahead only if its memory changed."""
        if self._rows[row].scores is None:
            started = time.perf_counter()
            gate = self.model.gate
            with role_adapter(self.model, "gate"):
                if self._rows[row].first_pass is None:
                    scores = gate.score_blocks(self.model, bank, step, question, memory).float().cpu()
                    self._rows[row].first_pass = scores
                else:
                    scores = gate.rescore_blocks(self.model, bank, step, question, memory, self._rows[row].first_pass)
                    scores = scores.float().cpu()
            self._rows[row].scores, self._rows[row].scored_from = scores, step
            self._rows[row].score_share = (time.perf_counter() - started) / max(len(scores), 1)
        score = float(self._rows[row].scores[step - self._rows[row].scored_from])
        kept, decision = self.policy.decide(score, step == len(bank) - 1, self._rows[row].kept)
        self._rows[row].kept += int(kept)
        return LycheeBlockTrace(
            block_index=step,
            span=bank.spans[step],
            gate_score=score,
            kept=kept,
            gate_decision=decision,
            memory_ids=[],
            gate_seconds=self._rows[row].score_share,
            row=row,
        )

    def _discard_scores(self, row: int, step: int) -> float:
        """Drops `row`'s scores of the blocks after `step`; returns the scoring seconds they had cost."""
        unused = len(self._rows[row].scores) - (step - self._rows[row].scored_from + 1)
        self._rows[row].scores = None
        return unused * self._rows[row].score_share

    def update_memories(
        self,
        blocks: list[LycheeMemoryBlock],
        questions: list[torch.LongTensor],
        memories: list[torch.LongTensor],
        synced_gpus: bool | None = None,
    ) -> tuple[list[torch.LongTensor], list[list[int]], list[list[int]]]:
        """One batched memory update: each row reads its block as prefix and writes a new memory.

        Returns:
            `(memories, generated, prompts)`: per row the new memory (1-D ids), the generated ids through the
            first stop, and the prompt ids fed to `generate` (before left padding).
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
            synced_gpus=synced_gpus,
            **prefix.generate_inputs(prompt_mask),
        )
        generated = sequences[:, prompt_ids.shape[1] :]
        drop = sorted(set(eos_ids) | {pad_id})
        new_memories = [clean_memory(row, drop, config.memory_budget) for row in generated]
        written = [row[: count_decoded(row, eos_ids, pad_id)].tolist() for row in generated]
        return new_memories, written, [prompt.tolist() for prompt in prompts]

    def answer(self, questions: list[torch.LongTensor], memories: list[torch.LongTensor], **generate_kwargs):
        """The final turn: every row answers from its question and working memory alone (`reasoner` adapter).

        Records each row's prompt and answer ids in its trace. Returns what `run` returns.
        """
        eos_ids, pad_id = stop_and_pad_ids(self.answer_config)
        prompts = [build_prompt(self.model.config.final_template_ids, q, m) for q, m in zip(questions, memories)]
        prompt_ids, prompt_mask = left_pad(prompts, pad_id)
        started = time.perf_counter()
        with role_adapter(self.model, "reasoner"):
            output = GenerationMixin.generate(
                self.model,
                prompt_ids,
                attention_mask=prompt_mask,
                generation_config=self.answer_config,
                **generate_kwargs,
            )
        seconds = time.perf_counter() - started
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        answers = sequences[:, prompt_ids.shape[1] :]
        for trace, prompt, answer in zip(self.traces, prompts, answers):
            trace.answer_seconds = seconds  # rows of a batch share the answer turn
            trace.answer_prompt_ids = prompt.tolist()
            trace.answer_ids = answer[: count_decoded(answer, eos_ids, pad_id)].tolist()
        return answers, output


def wants_progress(show_progress: bool | None, total: int) -> bool:
    """Whether long work shows a progress bar: as asked, else from 8 steps (chunks, blocks) on."""
    return show_progress if show_progress is not None else total >= 8
