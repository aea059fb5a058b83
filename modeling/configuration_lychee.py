"""Configuration of a LycheeMemory model: a nested backbone config plus the method's knobs."""

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .first_stage_lychee import check_first_stage

SUPPORTED_BACKBONES = ("llama", "qwen2", "mistral")
COMPRESSION_MODES = ("memory_tokens", "lossless")
MEMORY_TOKEN_PLACEMENTS = ("interleave", "append")
POSITION_SCHEMES = ("reference", "sequential")
GATE_TYPES = ("always_related", "query_likelihood", "classifier")
ANSWER_SOURCES = ("memory", "evidence")
# Pieces of the gate prompt per gate type: around the question, or around question and working memory.
GATE_TEMPLATE_PIECES = {"query_likelihood": 2, "classifier": 3}


class LycheeMemoryConfig(PreTrainedConfig):
    r"""
    Configuration of [`LycheeMemoryForCausalLM`]: the backbone's own config (`text_config`) plus the knobs of the
    compress → gate → reason loop.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the backbone decoder (Llama, Qwen2 or Mistral). Named `text_config` so that transformers'
            `get_text_config()` (caches, generation) finds it.
        chunk_size (`int`, *optional*, defaults to 4096):
            Source tokens per memory block. Must be a multiple of `compression_window`.
        compression_window (`int`, *optional*, defaults to 2048):
            Raw tokens the compressor reads per forward pass (the authors' `lychee_memory_window`).
        compression_ratio (`int`, *optional*, defaults to 4):
            Raw tokens per memory token: a 4096-token chunk becomes 1024 memory slots at ratio 4.
        compression_mode (`str`, *optional*, defaults to `"memory_tokens"`):
            `"memory_tokens"` keeps only the memory tokens' K/V; `"lossless"` keeps the chunk's own K/V (no
            compression; runs on an untrained backbone and is the accuracy upper bound).
        memory_token_placement (`str`, *optional*, defaults to `"interleave"`):
            `"interleave"` puts one memory token after every `compression_ratio` raw tokens (the authors'
            checkpoint); `"append"` puts a window's memory tokens after its raw tokens.
        memory_budget (`int`, *optional*, defaults to 1024):
            Maximum length in tokens of the working memory; also the max new tokens of each memory update.
        max_answer_tokens (`int`, *optional*, defaults to 1024):
            Max new tokens of the final answer when the caller sets none.
        gate_type (`str`, *optional*, defaults to `"always_related"`):
            Which gate scores blocks. `"always_related"` keeps every block, as the authors' release does;
            `"query_likelihood"` is a weight-free gate that keeps blocks which make the question much more likely;
            `"classifier"` is the trained gate: the `gate` LoRA adapter reads the block, the question and the
            working memory and answers yes or no (P(related) = sigmoid(logit yes - logit no)).
        gate_threshold (`float`, *optional*, defaults to 0.5):
            A block is read when its gate probability is at least this value.
        gate_max_blocks (`int`, *optional*):
            Read at most this many blocks per question (in document order, the first ones that pass the
            threshold); with `gate_keep_last` the last block is one of them. `None` (default): no limit.
        gate_keep_last (`bool`, *optional*, defaults to `False`):
            Always read the last block, whatever its score.
        gate_batch_size (`int`, *optional*, defaults to 8):
            Blocks the gate scores per forward pass.
        gate_reads_memory (`bool`, *optional*, defaults to `False`):
            `query_likelihood` only: once the working memory holds something, a block ahead is also related when
            it makes the *memory* much more likely (it continues what was found: the second hop of a chain, whose
            entity the question never names), and the blocks ahead are rescored after every memory update. The
            classifier gate always reads the memory; `always_related` has no scores.
        gate_revisit (`bool`, *optional*, defaults to `False`):
            After the in-order scan, score the blocks it skipped again against the final working memory and read
            the ones now related (document order, once each, within `gate_max_blocks`), before the answer: a chain
            whose second fact comes before the fact that names its entity is out of reach of one in-order scan.
            Needs a gate that reads the memory (`classifier`, or `query_likelihood` with `gate_reads_memory`).
        gate_label_ids (`list[int]`, *optional*):
            The classifier gate's answer tokens `[yes, no]`. Built by `from_backbone`.
        position_scheme (`str`, *optional*, defaults to `"reference"`):
            `"reference"`: block keys enter the reasoner un-rotated and the prompt starts at position
            `slots_per_block` (what the authors' checkpoint was trained with). `"sequential"`: the block's valid
            slots are rotated at positions 0..n-1 and the prompt follows at n (natural for lossless blocks).
        update_template_ids (`list[list[int]]`, *optional*):
            Token ids of the memory-update prompt, as three pieces: before the question, between question and
            memory, after the memory (chat turn markers included). Built by `from_backbone`.
        final_template_ids (`list[list[int]]`, *optional*):
            The final-answer prompt, in the same three pieces.
        gate_template_ids (`list[list[int]]`, *optional*):
            The gate's prompt after a block: two pieces around the question (`query_likelihood`), or three pieces
            around the question and the working memory (`classifier`).
        initial_memory_ids (`list[int]`, *optional*):
            Token ids of the working memory before the first block ("No previous memory").
        answer_not_found (`bool`, *optional*, defaults to `False`):
            Answer `unanswerable_answer` (and flag the trace `not_found`) instead of generating when no block was
            read, the working memory holds nothing new after the scan, or (with `generate(tokenizer=...)`) the
            question names or asks about what the document lacks: "not found" instead of an invention.
            Off by default so the authors' numerics are kept; the embedded default turns it on (`lychee-hf ask
            --no-not-found` turns it off for one run).
        answer_from (`str`, *optional*, defaults to `"memory"`):
            Where the final answer comes from: `"memory"` (the reasoner generates it from the working memory: the
            paper's method) or `"evidence"` (with `generate(tokenizer=...)` and a bank that keeps its text, the
            name, number or code of the best read passage that the reasoner scores most likely, copied exactly;
            see `extract_lychee`). The embedded default uses `"evidence"`.
        unanswerable_answer_ids (`list[int]`, *optional*):
            Token ids of that answer ("Not found in the document."). Built by `from_backbone`.
        first_stage (`str`, *optional*, defaults to `"full_scan"`):
            Which blocks the gate scores: `"full_scan"` (every block, for every question: the paper's setting) or
            `"lexical"` (the `first_stage_candidates` blocks a BM25 index over the bank's text ranks best for the
            question, plus `first_stage_sample` blocks spread over the document, and, with a gate that reads the
            memory, the best blocks ahead for each new memory): a per-question cost that does not grow with the
            document. Needs a bank that keeps its text and `generate(tokenizer=...)`; see `first_stage_lychee`.
        first_stage_candidates (`int`, *optional*, defaults to 8):
            Blocks the index names per question (and per memory update).
        first_stage_sample (`int`, *optional*, defaults to 4):
            Blocks spread evenly over the document that the gate scores beside the candidates.
        memory_projection_rank (`int`, *optional*):
            Store each memory q/k/v projection as the backbone's weight plus a delta of this rank (`LowRankDelta`)
            instead of a full matrix. `None` (default) keeps full matrices.
        compress_batch_size (`int`, *optional*, defaults to 1):
            Chunks compressed per forward pass.
        role_adapters (`list[str]`, *optional*):
            The role adapters (`compressor`, `gate`, `reasoner`) saved with the checkpoint, each in the subfolder
            of its name; `from_pretrained` loads them. Written by `save_pretrained`.
    """

    model_type = "lychee_memory"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    text_config: dict | PreTrainedConfig | None = None
    chunk_size: int = 4096
    compression_window: int = 2048
    compression_ratio: int = 4
    compression_mode: Literal["memory_tokens", "lossless"] = "memory_tokens"
    memory_token_placement: Literal["interleave", "append"] = "interleave"
    memory_budget: int = 1024
    max_answer_tokens: int = 1024
    gate_type: str = "always_related"
    gate_threshold: float = 0.5
    gate_max_blocks: int | None = None
    gate_keep_last: bool = False
    gate_batch_size: int = 8
    gate_reads_memory: bool = False
    gate_revisit: bool = False
    gate_label_ids: list[int] | None = None
    position_scheme: Literal["reference", "sequential"] = "reference"
    update_template_ids: list[list[int]] | None = None
    final_template_ids: list[list[int]] | None = None
    gate_template_ids: list[list[int]] | None = None
    initial_memory_ids: list[int] | None = None
    answer_not_found: bool = False
    answer_from: str = "memory"
    unanswerable_answer_ids: list[int] | None = None
    first_stage: str = "full_scan"
    first_stage_candidates: int = 8
    first_stage_sample: int = 4
    compress_batch_size: int = 1
    memory_projection_rank: int | None = None
    role_adapters: list[str] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The tie flag lives in the backbone's config; the top-level model reads it from here.
        if self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        self.validate()

    @property
    def slots_per_block(self) -> int:
        """Number of K/V slots one block holds: `chunk_size / compression_ratio`, or `chunk_size` when lossless."""
        if self.compression_mode == "lossless":
            return self.chunk_size
        return self.chunk_size // self.compression_ratio

    @property
    def memory_tokens_per_window(self) -> int:
        return self.compression_window // self.compression_ratio

    def template_length(self, which: str) -> int:
        """Number of literal template tokens (question and memory excluded) of `"update"` or `"final"`."""
        pieces = self.update_template_ids if which == "update" else self.final_template_ids
        return sum(len(piece) for piece in pieces or [])

    def validate(self) -> None:
        """Checks every knob and their combinations; raises `ValueError` naming the fix."""
        self._validate_choices()
        self._validate_sizes()
        self._validate_templates()
        self._validate_positions()

    def _validate_choices(self) -> None:
        model_type = getattr(self.text_config, "model_type", None)
        if model_type not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"Backbone model_type {model_type!r} is not supported: LycheeMemory needs a rotary decoder with "
                f"q/k/v/o projections, one of {SUPPORTED_BACKBONES}."
            )
        choices = {
            "compression_mode": COMPRESSION_MODES,
            "memory_token_placement": MEMORY_TOKEN_PLACEMENTS,
            "position_scheme": POSITION_SCHEMES,
            "gate_type": GATE_TYPES,
            "answer_from": ANSWER_SOURCES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}.")
        check_gate_policy(self.gate_threshold, self.gate_max_blocks)
        check_first_stage(self.first_stage, self.first_stage_candidates, self.first_stage_sample)
        if not isinstance(self.gate_batch_size, int) or self.gate_batch_size < 1:
            raise ValueError(f"gate_batch_size must be a positive integer, got {self.gate_batch_size!r}.")

    def _validate_sizes(self) -> None:
        for name in ("chunk_size", "compression_window", "compression_ratio", "memory_budget", "max_answer_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.memory_projection_rank is not None and self.memory_projection_rank < 1:
            raise ValueError(
                f"memory_projection_rank must be >= 1 or None (full matrices), got {self.memory_projection_rank}."
            )
        if self.compress_batch_size < 1:
            raise ValueError(f"compress_batch_size must be >= 1, got {self.compress_batch_size}.")
        if self.compression_mode == "lossless":
            return
        window, ratio, chunk = self.compression_window, self.compression_ratio, self.chunk_size
        if window % ratio != 0:
            lower = max(ratio, window - window % ratio)
            raise ValueError(
                f"compression_window {window} is not a multiple of compression_ratio {ratio}: use {lower} or "
                f"{lower + ratio}."
            )
        if chunk % window != 0:
            lower = max(window, chunk - chunk % window)
            raise ValueError(
                f"chunk_size {chunk} is not a multiple of compression_window {window}: use {lower} or {lower + window}."
            )

    def _validate_templates(self) -> None:
        vocab_size = self.text_config.vocab_size
        # The always-related gate reads no prompt: any gate template (kept for switching back) is fine.
        gate_pieces = GATE_TEMPLATE_PIECES.get(self.gate_type)
        for name, count in (("update_template_ids", 3), ("final_template_ids", 3), ("gate_template_ids", gate_pieces)):
            pieces = getattr(self, name)
            if pieces is None or count is None:
                continue
            if len(pieces) != count:
                raise ValueError(
                    f"{name} must hold {count} pieces of token ids (the literal text around the question"
                    f"{' and the memory' if count == 3 else ''}), got {len(pieces)}. Build it with "
                    "LycheeMemoryForCausalLM.from_backbone (or model.set_gate(gate_type, tokenizer) to change gates)."
                )
            _check_ids_in_vocab(name, [i for piece in pieces for i in piece], vocab_size)
        if self.initial_memory_ids is not None:
            _check_ids_in_vocab("initial_memory_ids", self.initial_memory_ids, vocab_size)
        if self.gate_label_ids is not None:
            if len(self.gate_label_ids) != 2 or self.gate_label_ids[0] == self.gate_label_ids[1]:
                raise ValueError(
                    f"gate_label_ids must be two different token ids [yes, no], got {self.gate_label_ids}."
                )
            _check_ids_in_vocab("gate_label_ids", self.gate_label_ids, vocab_size)
        if self.gate_type == "classifier" and self.gate_label_ids is None and self.gate_template_ids is not None:
            raise ValueError(
                "gate_type='classifier' needs gate_label_ids (the [yes, no] answer tokens): build the model with "
                "from_backbone(..., gate_type='classifier') or call model.set_gate('classifier', tokenizer)."
            )

    def _validate_positions(self) -> None:
        max_positions = self.text_config.max_position_embeddings
        if self.compression_mode == "memory_tokens":
            # The last window sees every earlier window's memory tokens as prefix, then its own slots.
            windows = self.chunk_size // self.compression_window
            last_position = (windows - 1) * self.memory_tokens_per_window + self.compression_window
            last_position += self.memory_tokens_per_window
            if last_position > max_positions:
                raise ValueError(
                    f"Compressing one chunk reaches position {last_position}, beyond the backbone's "
                    f"max_position_embeddings {max_positions}: lower chunk_size or compression_window."
                )
        # A memory update reads a block, its prompt (template + memory) and writes up to memory_budget tokens;
        # the question comes on top and is checked in `generate`.
        update_span = self.slots_per_block + self.template_length("update") + 2 * self.memory_budget
        if update_span > max_positions:
            raise ValueError(
                f"A memory update needs {update_span} positions (block {self.slots_per_block} + template "
                f"{self.template_length('update')} + 2 x memory_budget {self.memory_budget}), beyond the "
                f"backbone's max_position_embeddings {max_positions}: lower memory_budget or chunk_size."
            )


def backbone_head_dim(text_config) -> int:
    """Channels per attention head of a backbone config: its `head_dim`, else hidden size / heads."""
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


def check_gate_policy(threshold: float, max_blocks: int | None) -> None:
    """Validates the gate policy knobs, from the config or from one `generate` call's overrides."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"gate_threshold={threshold} must lie in [0, 1] (it is a probability).")
    if max_blocks is not None and (not isinstance(max_blocks, int) or max_blocks < 1):
        raise ValueError(f"gate_max_blocks must be a positive integer or None, got {max_blocks!r}.")


def _check_ids_in_vocab(name: str, ids: list[int], vocab_size: int) -> None:
    bad = [i for i in ids if not 0 <= int(i) < vocab_size]
    if bad:
        raise ValueError(f"{name} holds ids outside the vocabulary [0, {vocab_size}): {bad[:5]}.")


__all__ = ["LycheeMemoryConfig"]
