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
from transformers.utils import logging

from .adapters_lychee import role_adapter
from .compat_lychee import cache_kwargs
from .final_answer_lychee import extracted_answers, not_found_answers, not_found_reasons
from .first_stage_lychee import NOT_A_CANDIDATE, BlockView, Candidates, FirstStage
from .gate_lychee import GatePolicy
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock
from .prefix_lychee import block_prefix
from .prompts_lychee import build_prompt, clean_memory, count_decoded, left_pad, stop_and_pad_ids
from .trace_lychee import LycheeBlockTrace, LycheeTrace


@dataclass
class _RowState:
    """What the scan keeps per batch row between blocks (one place, so no row's state is a loose list).

    Attributes:
        scores (`torch.Tensor`, *optional*): gate scores of the gated blocks from `scored_from` on; None once
            stale (a memory update changed what a memory-reading gate would say).
        first_pass (`torch.Tensor`, *optional*): (len(bank),) the gate's first scores from block 0 on (0 for
            blocks the first stage did not name); the question's share of every rescoring is taken from them.
        scored_from (`int`): the position (in `gated`) `scores[0]` belongs to.
        candidates (`Candidates`, *optional*): the blocks the first stage names (None: the full scan).
        gated (`LycheeMemoryBank` or `BlockView`, *optional*): what the gate scores: the bank, or its candidates.
        score_share (`float`): seconds of the last scoring pass per block it scored (charged to each block).
        kept (`int`): blocks read so far (for `gate_max_blocks`).
        spans (`list`): every block's token span, taken once (a bank builds the list on each `spans` access).
        memory_list (`tuple`, *optional*): (memory tensor, its ids as a list) for the records of passed blocks.
    """

    scores: torch.Tensor | None = None
    first_pass: torch.Tensor | None = None
    scored_from: int = 0
    score_share: float = 0.0
    kept: int = 0
    candidates: Candidates | None = None
    gated: object = None
    spans: list = field(default_factory=list)
    memory_list: tuple | None = None

    def position(self, block: int) -> int | None:
        """`block`'s position among the gated blocks (None when the first stage did not name it)."""
        if isinstance(self.gated, BlockView):
            return self.gated.position.get(block)
        return block

    def first_pass_of_gated(self) -> torch.Tensor:
        """The first pass's scores of the gated blocks, in their order."""
        if isinstance(self.gated, BlockView):
            return self.first_pass[self.gated.indices]
        return self.first_pass


@dataclass
class ReasonerLoop:
    """One call's loop state (never stored on the model, so calls and threads never share memory).

    Attributes:
        model (`LycheeMemoryForCausalLM`): the model (shared backbone, gate, role adapters).
        update_config (`GenerationConfig`): decoding of the memory updates.
        answer_config (`GenerationConfig`): decoding of the final answer.
        show_progress (`bool`, *optional*): progress bar over blocks (default: on for 8+).
        policy (`GatePolicy`, *optional*): keep/skip rule (default: the config's).
        answer_not_found (`bool`, *optional*): answer "not found" when nothing was read or learnt (default: the
            config's `answer_not_found`).
        first_stage (`FirstStage`, *optional*): how the blocks the gate scores are chosen (default: the full scan).
        answer_from (`str`, *optional*): `"memory"` (generate the answer from the working memory) or `"evidence"`
            (copy it from the best read passage: `extract_lychee`; default: the config's `answer_from`).
        traces (`list[LycheeTrace]`): filled by `run`, one per row.
    """

    model: "torch.nn.Module"
    update_config: GenerationConfig
    answer_config: GenerationConfig
    show_progress: bool | None = None
    policy: GatePolicy | None = None
    answer_not_found: bool | None = None
    first_stage: "FirstStage | None" = None
    answer_from: str | None = None
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
        for trace, bank, question in zip(self.traces, banks, questions):
            trace.question_ids = question.tolist()
            trace.document_text = getattr(bank, "document_text", None)
        self._rows = [_RowState() for _ in banks]
        for state, bank, question in zip(self._rows, banks, questions):
            state.candidates = (self.first_stage or FirstStage()).candidates(bank, question)
            full = state.candidates is None or len(state.candidates.chosen_by) == len(bank)
            state.gated = bank if full else BlockView(bank, state.candidates.blocks)
            state.spans = list(bank.spans)
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
            total=steps,
            desc="reasoning over blocks",
            unit="block",
            disable=not wants_progress(self.show_progress, steps),
        )
        # Each row walks its own blocks to the next one its gate keeps; the rows' memory updates at those blocks
        # (different blocks per row) then run as one batched call. Rows do not wait for each other block by block,
        # so questions asked together share every update call, not only those at the same block.
        cursors, shown = [0] * len(banks), 0
        while True:
            self._score_together(cursors, banks, questions, memories)
            records = {}
            for row, bank in enumerate(banks):
                record = self._next_kept(row, bank, cursors, questions[row], memories[row], compress_seconds)
                if record is not None:
                    records[row] = record
            progress.update(min(cursors) - shown)  # a disabled bar may be transformers' EmptyTqdm: no .n
            shown = min(cursors)
            if not records:
                break
            self._update(records, banks, questions, memories, synced_gpus)
            for row, record in records.items():
                record.memory_ids = memories[row].tolist()
                self.traces[row].append(record)
        progress.close()
        if self.policy.revisit:
            self._revisit(banks, questions, memories, synced_gpus)
        return memories

    def _next_kept(
        self, row: int, bank, cursors: list[int], question: torch.LongTensor, memory: torch.LongTensor, compress_seconds
    ) -> LycheeBlockTrace | None:
        """Walks `row` from its cursor to the next block its gate keeps and returns that block's record (None at the
        end); the blocks passed on the way (skipped, or never named by the first stage) go to its trace."""
        state = self._rows[row]
        while cursors[row] < len(bank):
            step = cursors[row]
            cursors[row] += 1
            if state.position(step) is None:  # not a candidate: recorded in O(1), never scored
                record = LycheeBlockTrace(step, state.spans[step], 0.0, False, (), NOT_A_CANDIDATE, row=row)
            else:
                record = self._gate(row, bank, step, question, memory)
            record.compress_seconds = compress_seconds[row][step] if compress_seconds else 0.0
            if record.kept:
                return record
            if state.memory_list is None or state.memory_list[0] is not memory:
                state.memory_list = (memory, memory.tolist())
            record.memory_ids = state.memory_list[1]  # unchanged memory: one list shared by its records
            self.traces[row].append(record)
        return None

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
                # the blocks ahead need scores for the new memory (and the index may name more of them)
                records[row].gate_seconds += self._discard_scores(row, records[row].block_index)
                self._add_candidates_for_memory(row, banks[row], records[row].block_index, memory)
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
            state = self._rows[row]
            self._add_candidates_for_memory(row, bank, -1, memories[row])  # behind as well: the second look's reach
            read = {record.block_index for record in self.traces[row] if record.kept}
            skipped = [block for block in range(len(bank)) if block not in read and state.position(block) is not None]
            if not skipped:
                continue
            started = time.perf_counter()
            with role_adapter(self.model, "gate"):
                scores = self.model.gate.revisit_scores(
                    self.model,
                    state.gated,
                    [state.position(block) for block in skipped],
                    questions[row],
                    memories[row],
                    state.first_pass_of_gated(),
                )
            seconds = time.perf_counter() - started
            queue = []
            for block, score in zip(skipped, scores.tolist()):
                if self.policy.revisits(score, self._rows[row].kept):
                    self._rows[row].kept += 1
                    queue.append(
                        LycheeBlockTrace(
                            block_index=block,
                            span=state.spans[block],
                            gate_score=score,
                            kept=True,
                            memory_ids=(),
                            gate_decision="revisit",
                            chosen_by=state.candidates.chosen_by[block] if state.candidates else "full scan",
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
        state = self._rows[row]
        position = state.position(step)
        if position is None:  # the first stage did not name the block: the gate never scores it
            return LycheeBlockTrace(step, state.spans[step], 0.0, False, (), NOT_A_CANDIDATE, row=row)
        if state.scores is None:
            started = time.perf_counter()
            gate = self.model.gate
            with role_adapter(self.model, "gate"):
                if state.first_pass is None:
                    scores = gate.score_blocks(self.model, state.gated, position, question, memory).float().cpu()
                    state.first_pass = torch.zeros(len(bank))
                    if isinstance(state.gated, BlockView):
                        state.first_pass[state.gated.indices] = scores
                    else:
                        state.first_pass = scores
                else:
                    scores = gate.rescore_blocks(
                        self.model, state.gated, position, question, memory, state.first_pass_of_gated()
                    )
                    scores = scores.float().cpu()
            state.scores, state.scored_from = scores, position
            state.score_share = (time.perf_counter() - started) / max(len(scores), 1)
        score = float(state.scores[position - state.scored_from])
        kept, decision = self.policy.decide(score, step == len(bank) - 1, state.kept)
        state.kept += int(kept)
        return LycheeBlockTrace(
            block_index=step,
            span=state.spans[step],
            gate_score=score,
            kept=kept,
            gate_decision=decision,
            chosen_by=state.candidates.chosen_by[step] if state.candidates else "full scan",
            memory_ids=(),
            gate_seconds=state.score_share,
            row=row,
        )

    def _score_together(self, cursors: list[int], banks, questions, memories) -> None:
        """Scores, in one gate call, the rows that need scores at their cursor over the same blocks (one bank, the
        same gated blocks, the same position): the questions asked of one bank pay one forward per block together,
        not one each. Rows left unscored here (alone in their group) are scored by `_gate` as before."""
        groups = {}
        for row, bank in enumerate(banks):
            state = self._rows[row]
            position = state.position(cursors[row]) if cursors[row] < len(bank) else None
            if position is None or state.scores is not None:
                continue
            key = (id(state.gated), position, state.first_pass is None)
            groups.setdefault(key, []).append(row)
        for (_, position, first), rows in groups.items():
            if len(rows) < 2:
                continue
            gated = self._rows[rows[0]].gated
            started = time.perf_counter()
            with role_adapter(self.model, "gate"):
                scores = self.model.gate.score_rows(
                    self.model,
                    gated,
                    position,
                    [questions[row] for row in rows],
                    [memories[row] for row in rows],
                    None if first else [self._rows[row].first_pass_of_gated() for row in rows],
                )
            share = (time.perf_counter() - started) / len(rows)
            for row, row_scores in zip(rows, scores):
                state = self._rows[row]
                row_scores = row_scores.float().cpu()
                if first:
                    state.first_pass = torch.zeros(len(banks[row]))
                    if isinstance(state.gated, BlockView):
                        state.first_pass[state.gated.indices] = row_scores
                    else:
                        state.first_pass = row_scores
                state.scores, state.scored_from = row_scores, position
                state.score_share = share / max(len(row_scores), 1)

    def _add_candidates_for_memory(self, row: int, bank: LycheeMemoryBank, step: int, memory) -> None:
        """With a first stage, the index's best blocks after `step` for the memory's words join the candidates."""
        state = self._rows[row]
        if not isinstance(state.gated, BlockView) or self.first_stage is None:
            return
        if state.candidates.add_for_memory(self.first_stage.decode(memory), step, self.first_stage.candidates_k):
            state.gated = BlockView(bank, state.candidates.blocks)

    def _discard_scores(self, row: int, step: int) -> float:
        """Drops `row`'s scores of the blocks after `step`; returns the scoring seconds they had cost."""
        unused = len(self._rows[row].scores) - (self._rows[row].position(step) - self._rows[row].scored_from + 1)
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
        """The final turn: every row answers from its question and working memory alone (`reasoner` adapter); then
        `answer_from="evidence"` copies each answer from the read text instead, and `answer_not_found` replaces
        what answers nothing.

        Records each row's prompt and answer ids in its trace. A `streamer` gets the final answer: the generated
        one as it is decoded, or (when an answer may still be replaced) the final answers once, after the turn.
        Returns what `run` returns.
        """
        eos_ids, pad_id = stop_and_pad_ids(self.answer_config)
        tokenizer = generate_kwargs.get("tokenizer")
        from_evidence, not_found = self._answers_from_evidence(), self._not_found_enabled()
        streamer = generate_kwargs.pop("streamer", None) if from_evidence or not_found else None
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
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        answers = sequences[:, prompt_ids.shape[1] :]
        for trace, prompt, answer in zip(self.traces, prompts, answers):
            trace.answer_prompt_ids = prompt.tolist()
            trace.answer_ids = answer[: count_decoded(answer, eos_ids, pad_id)].tolist()
        refused = not_found_reasons(self.model, self.traces, memories, tokenizer) if not_found else {}
        if from_evidence:
            answers = extracted_answers(self.model, self.traces, answers, eos_ids, pad_id, tokenizer, skip=refused)
        answers = not_found_answers(self.model, self.traces, answers, refused, eos_ids, pad_id)
        seconds = time.perf_counter() - started
        for trace in self.traces:
            trace.answer_seconds = seconds  # rows of a batch share the answer turn
        if streamer is not None:
            streamer.put(prompt_ids.cpu())  # as generate does: a streamer with skip_prompt drops this
            streamer.put(answers.cpu())
            streamer.end()
        return answers, output

    def _answers_from_evidence(self) -> bool:
        answer_from = self.answer_from if self.answer_from is not None else self.model.config.answer_from
        return answer_from == "evidence"

    def _not_found_enabled(self) -> bool:
        return self.answer_not_found if self.answer_not_found is not None else self.model.config.answer_not_found


def wants_progress(show_progress: bool | None, total: int) -> bool:
    """Whether long work shows a progress bar: as asked, else from 8 steps (chunks, blocks) on."""
    return show_progress if show_progress is not None else total >= 8
