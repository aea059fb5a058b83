"""The methods compared by the evaluation runner and the benchmark, all on one model and its templates.

- `lychee` (and `lychee-lossless`, `lychee-compressed`, `lychee-nogate`, `lychee-gate`): the model's own
  compress → gate → reason loop, with some settings overridden for the run. `lychee-gate` uses the trained
  classifier gate when the model has a `gate` adapter, else the weight-free query-likelihood gate.
- `memagent`: the MemAgent workflow: the same memory-update loop, but each chunk (5000 tokens by default) is
  read as raw text in the prompt instead of as a compressed block; no bank, no gate.
- `full`: the backbone reads the whole context at once (the final-answer prompt with the context in place of
  the memory), cut in the middle when it does not fit its positions; the cut is reported, never hidden.
"""

import contextlib
import time
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, GenerationMixin

from ..data import QAExample
from ..modeling import (
    GATE_CLASSES,
    LycheeBlockTrace,
    adapter_names,
    build_prompt,
    clean_memory,
    count_decoded,
    memory_update_config,
    stop_and_pad_ids,
)
from ..text_banks import compress_text

LYCHEE_VARIANTS = {
    "lychee": {},
    "lychee-lossless": {"compression_mode": "lossless", "position_scheme": "sequential"},
    "lychee-compressed": {"compression_mode": "memory_tokens"},
    "lychee-nogate": {"gate_type": "always_related"},
    "lychee-gate": {"gate_type": "query_likelihood"},
    # the first stage: a BM25 index over the document's blocks names the ones the gate scores
    "lychee-index": {"first_stage": "lexical"},
}
METHODS = (*LYCHEE_VARIANTS, "memagent", "full")


@dataclass
class MethodResult:
    """One answer and what it cost.

    Attributes:
        prediction (`str`): the decoded answer.
        trace (`list[dict]`): per block (or raw chunk) read, `LycheeBlockTrace.to_dict`: index (`block`), span,
            gate score, kept, memory text, tokens.
        stats (`dict`): seconds, compress_seconds, prefill_tokens, decode_tokens, steps, truncated_tokens.
    """

    prediction: str
    trace: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


@contextlib.contextmanager
def configured(model, **overrides):
    """Temporarily overrides config knobs (and swaps the gate when `gate_type` changes); restores them after."""
    saved = {key: getattr(model.config, key) for key in overrides}
    saved_gate = model.gate
    try:
        for key, value in overrides.items():
            setattr(model.config, key, value)
        model.config.validate()
        if "gate_type" in overrides and overrides["gate_type"] != saved["gate_type"]:
            model.gate = GATE_CLASSES[overrides["gate_type"]](model.config).to(model.device)
        yield model
    finally:
        for key, value in saved.items():
            setattr(model.config, key, value)
        model.gate = saved_gate


def run_method(
    name: str,
    model,
    tokenizer,
    example: QAExample,
    generation_config: GenerationConfig | None = None,
    memory_generation_config: GenerationConfig | None = None,
    memagent_chunk_tokens: int = 5000,
    bank_dtype: str | None = None,
) -> MethodResult:
    """Answers `example` with method `name` (one of `METHODS`); `bank_dtype` stores lychee's blocks in that format."""
    question = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)], device=model.device)
    context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)], device=model.device)
    if name in LYCHEE_VARIANTS:
        overrides = LYCHEE_VARIANTS[name]
        if name == "lychee-gate" and "gate" in adapter_names(model):
            overrides = {"gate_type": "classifier"}
        with configured(model, **overrides):
            if model.config.first_stage != "lexical":
                settings = (generation_config, memory_generation_config, bank_dtype)
                return _lychee(model, tokenizer, question, context, *settings)
            started = time.perf_counter()  # the index reads the blocks' text: a bank that keeps it
            bank = compress_text(model, tokenizer, example.context, show_progress=False, bank_dtype=bank_dtype)
            compress_seconds = time.perf_counter() - started
            result = _lychee(model, tokenizer, question, bank, generation_config, memory_generation_config)
            result.stats["compress_seconds"] = compress_seconds
            result.stats["seconds"] += compress_seconds
            return result
    if name == "memagent":
        return _memagent(
            model, tokenizer, question, context, generation_config, memory_generation_config, memagent_chunk_tokens
        )
    if name == "full":
        return _full_context(model, tokenizer, question, context, generation_config)
    raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------- methods
def _lychee(
    model, tokenizer, question, context, generation_config, memory_generation_config, bank_dtype=None
) -> MethodResult:
    """`context` is the document's ids (compressed in the call) or a bank compressed from its text."""
    started = time.perf_counter()
    if isinstance(context, torch.Tensor):
        source = {"context_ids": context, "bank_dtype": bank_dtype}
    else:
        source = {"bank": context}
    out = model.generate(
        input_ids=question,
        generation_config=generation_config,
        memory_generation_config=memory_generation_config,
        return_dict_in_generate=True,
        show_progress=False,
        tokenizer=tokenizer,
        **source,
    )
    seconds = time.perf_counter() - started
    answer_ids = out.sequences[0, question.shape[1] :]
    final_prompt = len(out.trace[0].answer_prompt_ids)
    trace = [record.to_dict(tokenizer) for record in out.trace[0]]
    stats = {
        "seconds": seconds,
        "compress_seconds": sum(r.compress_seconds for r in out.trace[0]),
        "prefill_tokens": sum(r.prompt_tokens for r in out.trace[0]) + final_prompt,
        "decode_tokens": sum(r.tokens_decoded for r in out.trace[0]) + _answer_length(answer_ids, model),
        "steps": sum(r.kept for r in out.trace[0]),
        "blocks": len(out.trace[0]),
        "truncated_tokens": 0,
    }
    return MethodResult(tokenizer.decode(answer_ids, skip_special_tokens=True).strip(), trace, stats)


def _memagent(model, tokenizer, question, context, generation_config, memory_generation_config, chunk_tokens):
    """MemAgent's loop: per raw chunk, [chunk text] + update prompt(question, memory) → new memory."""
    config = model.config
    final = _final_config(model, generation_config)
    update = memory_update_config(final, config.memory_budget, memory_generation_config)
    eos_ids, pad_id = stop_and_pad_ids(update)
    limit = config.text_config.max_position_embeddings
    fits = limit - config.template_length("update") - question.shape[1] - 2 * config.memory_budget
    chunk_tokens = max(1, min(chunk_tokens, fits))  # a chunk must fit the backbone beside its prompt
    memory = torch.tensor(config.initial_memory_ids or [], dtype=torch.long, device=model.device)
    trace, prefill, decode = [], 0, 0
    started = time.perf_counter()
    for step, start in enumerate(range(0, context.shape[1], chunk_tokens)):
        chunk = context[0, start : start + chunk_tokens]
        prompt = torch.cat([chunk, build_prompt(config.update_template_ids, question[0], memory)])[None]
        step_started = time.perf_counter()
        out = GenerationMixin.generate(model, prompt, attention_mask=torch.ones_like(prompt), generation_config=update)
        generated = out[0, prompt.shape[1] :]
        memory = clean_memory(generated, sorted(set(eos_ids) | {pad_id}), config.memory_budget)
        decoded = _answer_length(generated, model)
        prefill, decode = prefill + prompt.shape[1], decode + decoded
        record = LycheeBlockTrace(
            block_index=step,
            span=(start, start + chunk.numel()),
            gate_score=1.0,
            kept=True,
            memory_ids=memory.tolist(),
            tokens_decoded=decoded,
            prompt_tokens=prompt.shape[1],
            reason_seconds=time.perf_counter() - step_started,
        )
        trace.append(record.to_dict(tokenizer))
    answer, final_prefill = _answer_from(model, question, memory, final)
    stats = {
        "seconds": time.perf_counter() - started,
        "compress_seconds": 0.0,
        "prefill_tokens": prefill + final_prefill,
        "decode_tokens": decode + _answer_length(answer, model),
        "steps": len(trace),
        "blocks": len(trace),
        "truncated_tokens": 0,
        "chunk_tokens": chunk_tokens,
    }
    return MethodResult(tokenizer.decode(answer, skip_special_tokens=True).strip(), trace, stats)


def _full_context(model, tokenizer, question, context, generation_config) -> MethodResult:
    """The backbone reads everything at once; a context too long for its positions loses its middle."""
    config = model.config
    final = _final_config(model, generation_config)
    room = config.text_config.max_position_embeddings - config.template_length("final") - question.shape[1]
    room -= final.max_new_tokens or config.max_answer_tokens
    ids = context[0]
    truncated = max(0, ids.numel() - room)
    if truncated:
        head = room // 2
        ids = torch.cat([ids[:head], ids[ids.numel() - (room - head) :]])
    started = time.perf_counter()
    answer, prefill = _answer_from(model, question, ids, final)
    stats = {
        "seconds": time.perf_counter() - started,
        "compress_seconds": 0.0,
        "prefill_tokens": prefill,
        "decode_tokens": _answer_length(answer, model),
        "steps": 1,
        "blocks": 0,
        "truncated_tokens": truncated,
    }
    return MethodResult(tokenizer.decode(answer, skip_special_tokens=True).strip(), [], stats)


# --------------------------------------------------------------------------------------------- helpers
def _final_config(model, generation_config: GenerationConfig | None) -> GenerationConfig:
    import copy

    final = copy.deepcopy(generation_config or model.generation_config)
    if final.max_new_tokens is None:
        final.max_new_tokens = model.config.max_answer_tokens
    return final


def _answer_from(model, question, memory, final: GenerationConfig) -> tuple[torch.LongTensor, int]:
    """Final-answer prompt over `memory` (or a whole context), via public generate: (answer ids, prompt length)."""
    prompt = build_prompt(model.config.final_template_ids, question[0], memory)[None]
    out = GenerationMixin.generate(model, prompt, attention_mask=torch.ones_like(prompt), generation_config=final)
    return out[0, prompt.shape[1] :], prompt.shape[1]


def _answer_length(ids: torch.LongTensor, model) -> int:
    eos_ids, pad_id = stop_and_pad_ids(model.generation_config)
    return count_decoded(ids, eos_ids, pad_id)
