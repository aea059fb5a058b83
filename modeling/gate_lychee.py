"""LycheeGate: decides, per block, whether the reasoner should read it.

`generate` asks the gate for the probability that each *remaining* block is related to the question given the
current working memory. Gates whose scores depend on the memory (`reads_memory = True`) are asked again after
every memory update; the others score a document once. A trained gate (a LoRA adapter on the shared backbone
plus a small head) is one more subclass with the same `score_blocks`, so `generate` never changes with the gate.

Gate types (`config.gate_type`):
- `always_related`: every block is read, as in the authors' release (they never published their gate).
- `query_likelihood`: zero-shot, no weights. A block is related when reading it makes the question much more
  likely: the mean log-probability of the question's tokens after the block, as a z-score against the
  document's other blocks (median and spread), mapped to a probability (even odds at 1.5 spreads, or at the
  largest z-score chance would give among that many blocks); the best-matching block always passes the
  threshold, so every document is read at least once. With `gate_reads_memory`, once the memory holds
  something, a block ahead is also related when it makes the memory much more likely (the same z-score, over the
  blocks ahead): the block that continues a chain whose next entity only the memory names. With `gate_revisit`,
  the blocks the scan skipped get a second look against the final memory (a chain whose second fact comes first
  in the document).
- `classifier`: the trained gate. The `gate` LoRA adapter on the shared backbone reads the block as prefix,
  then the question and the working memory in the gate prompt, and answers yes or no; P(related) =
  sigmoid(logit(yes) - logit(no)) at the prompt's last position. The "head" is thus the two `lm_head` rows of
  the answer tokens (`config.gate_label_ids`): no new weights beside the adapter, so the gate is one standard
  PEFT adapter, and an untrained adapter starts from the backbone's own zero-shot yes/no judgement. It reads
  the memory, so `generate` rescores the blocks ahead after every memory update.

`GatePolicy` turns the scores into keep/skip decisions (threshold, block limit, keep the last block).
"""

import math
from dataclasses import dataclass

import torch

from .adapters_lychee import adapter_names, role_adapter
from .compat_lychee import cache_kwargs
from .configuration_lychee import LycheeMemoryConfig, check_gate_policy
from .memory_bank_lychee import LycheeMemoryBank
from .prefix_lychee import block_prefix
from .pretrained_lychee import LycheePreTrainedModel
from .prompts_lychee import build_prompt, left_pad

# z-score (in spreads above the document median) at which a block is even odds related, and the slope around it.
# Among many blocks the midpoint rises (`likelihood_midpoint`), so that chance alone rarely passes it.
QUERY_LIKELIHOOD_MIDPOINT = 1.5
QUERY_LIKELIHOOD_SLOPE = 2.0
# Floor of the spread (nats/token) so that near-identical blocks do not turn noise into large z-scores.
QUERY_LIKELIHOOD_MIN_SPREAD = 0.25


class LycheeGate(LycheePreTrainedModel):
    """The default gate, `gate_type="always_related"`: every block is related (P = 1)."""

    reads_memory = False

    def __init__(self, config: LycheeMemoryConfig):
        super().__init__(config)
        self.post_init()

    def score_blocks(
        self,
        model: torch.nn.Module,
        bank: LycheeMemoryBank,
        start: int,
        question_ids: torch.LongTensor,
        memory_ids: torch.LongTensor,
    ) -> torch.Tensor:
        """Scores the blocks of one document still ahead against one question and working memory.

        Args:
            model (`LycheeMemoryForCausalLM`): the model (shared backbone, `lm_head`, config).
            bank (`LycheeMemoryBank`): the document; read blocks with `bank.block(i)` (a disk bank streams them).
            start (`int`): the first block to score; blocks `start .. len(bank) - 1` are still ahead.
            question_ids (`torch.LongTensor`): (L_q,) the question, without padding.
            memory_ids (`torch.LongTensor`): (L_m,) the current working memory.

        Returns:
            `torch.Tensor`: (len(bank) - start,) probabilities in [0, 1] that each block ahead is related.
        """
        return torch.ones(len(bank) - start)

    def rescore_blocks(
        self,
        model: torch.nn.Module,
        bank: LycheeMemoryBank,
        start: int,
        question_ids: torch.LongTensor,
        memory_ids: torch.LongTensor,
        first_pass: torch.Tensor,
    ) -> torch.Tensor:
        """Scores the blocks ahead again after a memory update; `generate` asks only gates that `reads_memory`.

        Args:
            model, bank, start, question_ids, memory_ids: as for `score_blocks`.
            first_pass (`torch.Tensor`): (len(bank),) this gate's scores of every block from the call's first
                pass (block 0 on, the initial memory). A gate whose scores have a part that does not depend on
                the memory takes that part from here instead of recomputing it; this default scores afresh.

        Returns:
            `torch.Tensor`: (len(bank) - start,) as `score_blocks`.
        """
        return self.score_blocks(model, bank, start, question_ids, memory_ids)

    def revisit_scores(
        self,
        model: torch.nn.Module,
        bank: LycheeMemoryBank,
        blocks: list[int],
        question_ids: torch.LongTensor,
        memory_ids: torch.LongTensor,
        first_pass: torch.Tensor,
    ) -> torch.Tensor:
        """Scores blocks the scan skipped against the final working memory: the second look of `gate_revisit`.

        Args:
            model, bank, question_ids, first_pass: as for `rescore_blocks`.
            blocks (`list[int]`): the skipped blocks' indices, in document order.
            memory_ids (`torch.LongTensor`): (L_m,) the working memory after the scan.

        Returns:
            `torch.Tensor`: (len(blocks),) probabilities that each is related. This default scores the whole
            document afresh and picks them out.
        """
        return self.score_blocks(model, bank, 0, question_ids, memory_ids)[blocks]

    def score_rows(
        self,
        model: torch.nn.Module,
        bank: LycheeMemoryBank,
        start: int,
        questions: list[torch.LongTensor],
        memories: list[torch.LongTensor],
        first_passes: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """`score_blocks` (or, with `first_passes`, `rescore_blocks`) for several rows over the same blocks: the
        questions asked of one bank together. A gate that can score many rows in one pass per block overrides
        this; the default scores row by row.

        Args:
            model, bank, start: as for `score_blocks`.
            questions (`list[torch.LongTensor]`): per row, its question (1-D).
            memories (`list[torch.LongTensor]`): per row, its working memory (1-D).
            first_passes (`list[torch.Tensor]`, *optional*): per row, its first pass (a rescoring); None for a
                first pass.

        Returns:
            `list[torch.Tensor]`: per row, (len(bank) - start,) as `score_blocks`.
        """
        if first_passes is None:
            return [self.score_blocks(model, bank, start, q, m) for q, m in zip(questions, memories)]
        return [self.rescore_blocks(model, bank, start, q, m, f) for q, m, f in zip(questions, memories, first_passes)]

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.score_blocks(*args, **kwargs)


class LycheeQueryLikelihoodGate(LycheeGate):
    """`gate_type="query_likelihood"`: relevance as the gain in question likelihood a block brings (no weights)."""

    @property
    def reads_memory(self) -> bool:
        return bool(self.config.gate_reads_memory)

    def score_blocks(self, model, bank, start, question_ids, memory_ids) -> torch.Tensor:
        if start >= len(bank):
            return torch.zeros(0)
        if not (self.reads_memory and self.memory_has_content(memory_ids)):
            return self.question_probabilities(model, bank, start, question_ids)
        # The question's scores over the whole document, as a first pass from block 0 gives them.
        first_pass = self.question_probabilities(model, bank, 0, question_ids)
        return self.rescore_blocks(model, bank, start, question_ids, memory_ids, first_pass)

    def rescore_blocks(self, model, bank, start, question_ids, memory_ids, first_pass) -> torch.Tensor:
        # The question's scores do not depend on the memory: the first pass's stand (so do its forced read of the
        # best block); only the memory's likelihoods over the blocks ahead are new.
        by_question = first_pass[start:].float().cpu()
        if start >= len(bank) or not (self.reads_memory and self.memory_has_content(memory_ids)):
            return by_question.clone()
        by_memory = likelihood_probabilities(self.text_likelihoods(model, bank, start, memory_ids))
        return torch.maximum(by_question, by_memory)

    def revisit_scores(self, model, bank, blocks, question_ids, memory_ids, first_pass) -> torch.Tensor:
        by_question = first_pass[blocks].float().cpu()
        if not (self.reads_memory and self.memory_has_content(memory_ids)):
            return by_question.clone()
        # The z-score runs over the skipped blocks only: the blocks that wrote the memory would set its scale.
        likelihoods = self.text_likelihoods(model, bank, 0, memory_ids)[blocks]
        return torch.maximum(by_question, likelihood_probabilities(likelihoods))

    def score_rows(self, model, bank, start, questions, memories, first_passes=None) -> list[torch.Tensor]:
        # One forward per block for all rows: the question's likelihoods in a first pass, the memory's in a
        # rescoring (the question's share of a rescoring is the first pass's, as for one row).
        if start >= len(bank) or len(questions) < 2:
            return super().score_rows(model, bank, start, questions, memories, first_passes)
        reading = [self.reads_memory and self.memory_has_content(m) for m in memories]
        if first_passes is None:
            if any(reading):  # a first pass after the memory changed: rare (one row at a time)
                return super().score_rows(model, bank, start, questions, memories, first_passes)
            likelihoods = self.text_likelihoods_many(model, bank, start, questions)
            return [self.passing_best(row) for row in likelihoods]
        scores = [first.float().cpu()[start:].clone() for first in first_passes]
        rows = [row for row, read in enumerate(reading) if read]
        if rows:
            likelihoods = self.text_likelihoods_many(model, bank, start, [memories[row] for row in rows])
            for row, row_likelihoods in zip(rows, likelihoods):
                scores[row] = torch.maximum(scores[row], likelihood_probabilities(row_likelihoods))
        return scores

    def question_probabilities(self, model, bank, start: int, question_ids: torch.LongTensor) -> torch.Tensor:
        """P(related) of blocks `start..` by question likelihood; the best block always passes the threshold."""
        return self.passing_best(self.text_likelihoods(model, bank, start, question_ids))

    def passing_best(self, likelihoods: torch.Tensor) -> torch.Tensor:
        """The question's likelihoods → P(related), the best block raised to the threshold (read at least once)."""
        probabilities = likelihood_probabilities(likelihoods)
        best = int(likelihoods.argmax())
        probabilities[best] = probabilities[best].clamp(min=self.config.gate_threshold)
        return probabilities

    def memory_has_content(self, memory_ids: torch.LongTensor) -> bool:
        """Whether the memory holds more than the initial memory (something was read into it)."""
        initial = torch.tensor(self.config.initial_memory_ids or [], dtype=torch.long)
        return memory_ids.numel() > 0 and not torch.equal(memory_ids.cpu().long(), initial)

    @torch.no_grad()
    def text_likelihoods(self, model, bank: LycheeMemoryBank, start: int, text_ids: torch.LongTensor) -> torch.Tensor:
        """Mean log P(text token | block, gate prompt) for blocks `start..`, in batches: (len(bank) - start,).

        `text_ids` is the question (or, with `gate_reads_memory`, the working memory), placed where the gate
        prompt puts the question."""
        pieces = self.config.gate_template_ids or [[], []]
        device = model.device
        prompt = torch.cat(
            [
                torch.tensor(pieces[0], dtype=torch.long, device=device),
                text_ids.to(device),
                torch.tensor(pieces[1], dtype=torch.long, device=device),
            ]
        )
        scored = slice(len(pieces[0]), len(pieces[0]) + text_ids.numel())  # the text's own tokens

        def score(blocks):
            prefix = block_prefix(model, blocks)
            ids = prompt.expand(len(blocks), -1)
            logits = model(ids, **cache_kwargs(prefix.cache), **prefix.forward_inputs(torch.ones_like(ids))).logits
            # Token t is predicted by the logits at t - 1; the first text token by the prompt's last piece-0
            # token (or, with an empty piece 0, it is not scored).
            log_probs = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            return log_probs[:, max(scored.start - 1, 0) : scored.stop - 1].mean(dim=1).cpu()

        return score_in_batches(score, bank, start, self.config.gate_batch_size)

    @torch.no_grad()
    def text_likelihoods_many(self, model, bank, start: int, texts: list[torch.LongTensor]) -> torch.Tensor:
        """`text_likelihoods` for several texts at once: (len(texts), len(bank) - start).

        Each pass reads a few blocks for every text (rows = blocks x texts). The prompts are right-padded: a causal
        model's logits at the real tokens never see the padding after them, so each text's scores are what it gets
        alone (up to floating-point rounding of the larger batch)."""
        pieces = self.config.gate_template_ids or [[], []]
        device = model.device
        head, tail = (torch.tensor(piece, dtype=torch.long, device=device) for piece in pieces[:2])
        prompts = [torch.cat([head, text.to(device), tail]) for text in texts]
        width = max(prompt.numel() for prompt in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            ids[row, : prompt.numel()] = prompt
        # text tokens t are predicted by the logits at t - 1 (a text with an empty piece 0 loses its first token)
        first = max(len(pieces[0]) - 1, 0)
        stops = [len(pieces[0]) + text.numel() - 1 for text in texts]
        blocks_per_pass = max(1, self.config.gate_batch_size // len(texts))

        def score(blocks):
            rows = [block for block in blocks for _ in texts]  # block-major: rows of block j are j*T .. j*T+T-1
            prefix = block_prefix(model, rows)
            batch = ids.repeat(len(blocks), 1)
            logits = model(batch, **cache_kwargs(prefix.cache), **prefix.forward_inputs(torch.ones_like(batch))).logits
            log_probs = logits[:, :-1].float().log_softmax(-1).gather(-1, batch[:, 1:, None])[..., 0].cpu()
            means = torch.stack([log_probs[row, first : stops[row % len(texts)]].mean() for row in range(len(rows))])
            return means.view(len(blocks), len(texts)).T.reshape(-1)  # text-major, to concatenate over passes

        chunks = [
            score([bank.block(i) for i in range(first_block, min(first_block + blocks_per_pass, len(bank)))]).view(
                len(texts), -1
            )
            for first_block in range(start, len(bank), blocks_per_pass)
        ]
        return torch.cat(chunks, dim=1)


def likelihood_probabilities(likelihoods: torch.Tensor) -> torch.Tensor:
    """(N,) mean log-likelihoods → P(related): a z-score against the blocks' median and spread, through a sigmoid
    centred on `likelihood_midpoint(N)`."""
    spread = likelihoods.std(unbiased=False).clamp(min=QUERY_LIKELIHOOD_MIN_SPREAD)
    z = (likelihoods - likelihoods.median()) / spread
    return torch.sigmoid(QUERY_LIKELIHOOD_SLOPE * (z - likelihood_midpoint(likelihoods.numel())))


def likelihood_midpoint(count: int) -> float:
    """The z-score at which one of `count` blocks is even odds related.

    The largest z-score of `count` unrelated blocks grows about as sqrt(2 ln count): 2.0 for 8 blocks (2K tokens
    in 256-token blocks), 2.6 for 32, 3.1 for 128 (32K). A fixed midpoint lets chance pass more and more blocks
    as documents grow; each one read before the fact can fill the memory with something the reasoner then keeps.
    """
    return max(QUERY_LIKELIHOOD_MIDPOINT, math.sqrt(2 * math.log(max(count, 1))))


class LycheeClassifierGate(LycheeGate):
    """`gate_type="classifier"`: the `gate` adapter answers "is this block related?" with yes or no."""

    reads_memory = True

    @torch.no_grad()
    def score_blocks(self, model, bank, start, question_ids, memory_ids) -> torch.Tensor:
        if "gate" not in adapter_names(model):
            raise ValueError(
                "gate_type='classifier' needs a trained gate adapter, and this model has none: train one with "
                "`lychee-hf train-gate`, load one with model.load_role_adapter(path, 'gate'), or use "
                "gate_type='query_likelihood'."
            )
        prompt = gate_prompt(self.config, question_ids, memory_ids)

        def score(blocks):
            return torch.sigmoid(self.logits(model, blocks, [prompt] * len(blocks)).float()).cpu()

        return score_in_batches(score, bank, start, self.config.gate_batch_size)

    def logits(self, model, blocks: list, prompts: list[torch.LongTensor], forward=None) -> torch.Tensor:
        """logit(yes) - logit(no) of each (block, prompt) pair with the `gate` adapter active: (B,).

        Differentiable (the gate trainer's loss reads it); `score_blocks` calls it under `no_grad`.

        Args:
            model (`LycheeMemoryForCausalLM`): the model, with a `gate` adapter.
            blocks (`list[LycheeMemoryBlock]`): one block per row, read as attention prefix.
            prompts (`list[torch.LongTensor]`): one 1-D gate prompt per row (`gate_prompt`); rows are left-padded.
            forward (`nn.Module`, *optional*): what to call instead of `model` (a distributed training wrapper).
        """
        pad_id = model.config.text_config.pad_token_id
        ids, mask = left_pad([p.to(model.device) for p in prompts], pad_id if pad_id is not None else 0)
        yes, no = self.config.gate_label_ids
        with role_adapter(model, "gate"):
            logits = (forward or model)(
                input_ids=ids, attention_mask=mask, memory_blocks=blocks, logits_to_keep=1
            ).logits
        return logits[:, -1, yes] - logits[:, -1, no]


def score_in_batches(score, bank: LycheeMemoryBank, start: int, batch_size: int) -> torch.Tensor:
    """`score(blocks) -> (len(blocks),)` over blocks `start..` of `bank`, `batch_size` blocks per pass; on an
    out-of-memory error the batch is halved and retried, so scoring takes as few passes as memory allows."""
    scores, first = [], start
    while first < len(bank):
        blocks = [bank.block(i) for i in range(first, min(first + batch_size, len(bank)))]
        try:
            scores.append(score(blocks))
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        first += len(blocks)
    return torch.cat(scores) if scores else torch.zeros(0)


def gate_prompt(config: LycheeMemoryConfig, question_ids: torch.LongTensor, memory_ids: torch.LongTensor):
    """The classifier gate's prompt: piece 0 + question + piece 1 + memory + piece 2 (1-D ids)."""
    if config.gate_label_ids is None or len(config.gate_template_ids or []) != 3:
        raise ValueError(
            "The classifier gate needs a three-piece gate template and gate_label_ids: call "
            "model.set_gate('classifier', tokenizer)."
        )
    return build_prompt(config.gate_template_ids, question_ids, memory_ids)


@dataclass
class GatePolicy:
    """Which blocks the reasoner reads, given their gate scores.

    Attributes:
        threshold (`float`): a block is related when its score is at least this.
        max_blocks (`int`, *optional*): read at most this many blocks, the first related ones in document order;
            with `keep_last` the last block is one of them.
        keep_last (`bool`): always read the last block.
        revisit (`bool`): after the scan, take a second look at the skipped blocks against the final memory.
    """

    threshold: float = 0.5
    max_blocks: int | None = None
    keep_last: bool = False
    revisit: bool = False

    @classmethod
    def from_config(cls, config, **overrides) -> "GatePolicy":
        """The config's policy, with `gate_threshold` / `gate_max_blocks` / `gate_keep_last` / `gate_revisit`
        overrides."""
        policy = cls(config.gate_threshold, config.gate_max_blocks, config.gate_keep_last, config.gate_revisit)
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

    def revisits(self, score: float, kept_so_far: int) -> bool:
        """Whether the second look reads a skipped block (the scan is over: no read is reserved any more)."""
        return score >= self.threshold and (self.max_blocks is None or kept_so_far < self.max_blocks)


GATE_POLICY_KWARGS = ("gate_threshold", "gate_max_blocks", "gate_keep_last", "gate_revisit")


GATE_CLASSES = {
    "always_related": LycheeGate,
    "query_likelihood": LycheeQueryLikelihoodGate,
    "classifier": LycheeClassifierGate,
}
