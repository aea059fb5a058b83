import json
import threading

import pytest
import torch

from lychee_hf import LycheeGate, LycheeGenerateOutput
from lychee_hf.modeling.compat_lychee import cache_kwargs
from lychee_hf.modeling.prefix_lychee import block_prefix
from lychee_hf.modeling.prompts_lychee import build_prompt, clean_memory
from lychee_hf.testing import document_ids, question_ids, tiny_lychee


@pytest.mark.compat
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_generate_with_context_returns_question_then_answer_and_a_trace(kind, tokenizer):
    model = tiny_lychee(kind)
    question = question_ids(tokenizer)
    out = model.generate(input_ids=question, context_ids=document_ids(tokenizer, 150), return_dict_in_generate=True)
    assert isinstance(out, LycheeGenerateOutput)
    assert torch.equal(out.sequences[:, : question.shape[1]], question)
    assert 0 < out.sequences.shape[1] - question.shape[1] <= model.config.max_answer_tokens
    trace = out.trace[0]
    assert [r.block_index for r in trace] == [0, 1, 2]
    assert all(r.kept and r.gate_score == 1.0 for r in trace)
    assert all(0 < len(r.memory_ids) <= model.config.memory_budget for r in trace)
    assert all(r.tokens_decoded > 0 and r.reason_seconds > 0 and r.compress_seconds > 0 for r in trace)


def test_generate_without_context_is_the_plain_backbone(tokenizer):
    model = tiny_lychee()
    prompt = question_ids(tokenizer)
    out = model.generate(prompt, max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        logits = model(prompt).logits[:, -1]
    assert out.shape == (1, prompt.shape[1] + 6)
    assert out[0, prompt.shape[1]] == logits.argmax(-1)


@pytest.mark.compat
def test_generate_from_a_bank_equals_generate_from_context(tokenizer):
    model = tiny_lychee()
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    bank = model.compress(doc)
    assert torch.equal(
        model.generate(input_ids=question, bank=bank), model.generate(input_ids=question, context_ids=doc)
    )


def _plain_reading_of_first_update(model, tokenizer, chunk, question):
    """Greedy memory update computed by reading [chunk text + update prompt] as ordinary tokens."""
    config = model.config
    prompt = build_prompt(config.update_template_ids, question[0], torch.tensor(config.initial_memory_ids))
    ids = torch.cat([chunk[0], prompt])[None]
    out = model.generate(ids, max_new_tokens=config.memory_budget, do_sample=False)
    return clean_memory(out[0, ids.shape[1] :], [tokenizer.eos_token_id, tokenizer.pad_token_id], config.memory_budget)


@pytest.mark.compat
def test_lossless_block_equals_reading_the_chunk_as_plain_text(tokenizer):
    model = tiny_lychee(compression_mode="lossless", position_scheme="sequential")
    chunk, question = document_ids(tokenizer, 64), question_ids(tokenizer)
    prefix = block_prefix(model, [model.compress(chunk).block(0)])
    prompt = question[0]
    with torch.no_grad():
        with_block = model(
            prompt[None], **cache_kwargs(prefix.cache), **prefix.forward_inputs(torch.ones(1, prompt.numel()))
        ).logits[:, -1]
        plain = model(torch.cat([chunk, prompt[None]], dim=1)).logits[:, -1]
    torch.testing.assert_close(with_block, plain, rtol=1e-4, atol=1e-4)
    # The whole update through generate with a prefilled cache writes the same memory as plain reading.
    out = model.generate(input_ids=question, context_ids=chunk, return_dict_in_generate=True)
    assert out.trace[0][0].memory_ids == _plain_reading_of_first_update(model, tokenizer, chunk, question).tolist()


def test_reference_scheme_starts_the_prompt_after_every_slot(tokenizer):
    model = tiny_lychee()
    bank = model.compress(document_ids(tokenizer, 100))
    prefix = block_prefix(model, [bank.block(1)])
    assert prefix.prompt_start.item() == 16 and prefix.slot_mask.sum() == 9  # masked slots still count
    assert torch.equal(prefix.cache.layers[0].keys[0], bank.block(1).keys[0])  # keys enter un-rotated


class RejectSecondBlock(LycheeGate):
    calls = 0
    reads_memory = True

    def score_blocks(self, model, bank, start, question_ids, memory_ids):
        RejectSecondBlock.calls += 1
        return torch.tensor([0.0 if span[0] == 64 else 0.9 for span in bank.spans[start:]])


def _generate_with_gate(gate_class, tokenizer):
    """A 3-block document answered with `gate_class` installed; the gate's call counter reset first."""
    model = tiny_lychee()
    model.gate = gate_class(model.config)
    RejectSecondBlock.calls = 0
    return model.generate(
        input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 150), return_dict_in_generate=True
    )


def test_a_gate_that_rejects_a_block_skips_its_reasoner_step(tokenizer):
    out = _generate_with_gate(RejectSecondBlock, tokenizer)
    first, second, third = out.trace[0]
    assert (first.kept, second.kept, third.kept) == (True, False, True)
    assert second.gate_score == 0.0 and second.tokens_decoded == 0 and second.reason_seconds == 0.0
    assert second.memory_ids == first.memory_ids
    # Rescored only after the memory changed: at block 0, and at block 1 after block 0 was read.
    assert RejectSecondBlock.calls == 2


class ScoreOnce(RejectSecondBlock):
    reads_memory = False


def test_a_gate_that_ignores_the_memory_scores_a_document_once(tokenizer):
    out = _generate_with_gate(ScoreOnce, tokenizer)
    assert [r.kept for r in out.trace[0]] == [True, False, True]
    assert RejectSecondBlock.calls == 1


def test_gate_threshold_decides_what_is_kept(tokenizer):
    model = tiny_lychee(gate_threshold=0.95)
    model.gate = RejectSecondBlock(model.config)
    out = model.generate(
        input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 150), return_dict_in_generate=True
    )
    assert [r.kept for r in out.trace[0]] == [False, False, False]
    assert out.trace[0][-1].memory_ids == model.config.initial_memory_ids


def _answer(sequences, question_len, eos):
    answer = sequences[question_len:].tolist()
    return answer[: answer.index(eos) + 1] if eos in answer else answer


@pytest.mark.compat
@pytest.mark.parametrize("scheme", ["reference", "sequential"])
def test_padded_batch_equals_rows_run_alone(scheme, tokenizer):
    model = tiny_lychee(position_scheme=scheme)
    questions = [question_ids(tokenizer)[0], question_ids(tokenizer, "Where was Alice born?")[0]]
    docs = [document_ids(tokenizer, 150, seed=1)[0], document_ids(tokenizer, 90, seed=2)[0]]
    q_len, d_len = max(q.numel() for q in questions), max(d.numel() for d in docs)
    q_ids = torch.full((2, q_len), tokenizer.pad_token_id)
    q_mask = torch.zeros(2, q_len, dtype=torch.long)
    c_ids = torch.full((2, d_len), tokenizer.pad_token_id)
    c_mask = torch.zeros(2, d_len, dtype=torch.long)
    for i, (q, d) in enumerate(zip(questions, docs)):
        q_ids[i, q_len - q.numel() :], q_mask[i, q_len - q.numel() :] = q, 1  # questions left-padded
        c_ids[i, : d.numel()], c_mask[i, : d.numel()] = d, 1  # documents right-padded
    batch = model.generate(
        input_ids=q_ids,
        attention_mask=q_mask,
        context_ids=c_ids,
        context_attention_mask=c_mask,
        return_dict_in_generate=True,
    )
    for i, (q, d) in enumerate(zip(questions, docs)):
        alone = model.generate(input_ids=q[None], context_ids=d[None], return_dict_in_generate=True)
        assert [r.memory_ids for r in batch.trace[i]] == [r.memory_ids for r in alone.trace[0]]
        eos = tokenizer.eos_token_id
        assert _answer(batch.sequences[i], q_len, eos) == _answer(alone.sequences[0], q.numel(), eos)


def test_one_bank_answers_a_batch_of_questions(tokenizer):
    model = tiny_lychee()
    bank = model.compress(document_ids(tokenizer, 100))
    question = question_ids(tokenizer)
    out = model.generate(input_ids=question.repeat(2, 1), bank=bank)
    assert torch.equal(out[0], out[1])


def test_calls_share_no_state_across_calls_and_threads(tokenizer):
    model = tiny_lychee()
    doc_a, doc_b = document_ids(tokenizer, 150, seed=1), document_ids(tokenizer, 150, seed=2)
    question = question_ids(tokenizer)
    expected_a = model.generate(input_ids=question, context_ids=doc_a)
    expected_b = model.generate(input_ids=question, context_ids=doc_b)
    assert torch.equal(model.generate(input_ids=question, context_ids=doc_a), expected_a)
    results = {}

    def run(name, doc):
        results[name] = model.generate(input_ids=question, context_ids=doc)

    threads = [threading.Thread(target=run, args=(n, d)) for n, d in (("a", doc_a), ("b", doc_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.equal(results["a"], expected_a) and torch.equal(results["b"], expected_b)


def test_generate_does_not_modify_the_bank(tokenizer):
    model = tiny_lychee()
    bank = model.compress(document_ids(tokenizer, 100))
    keys = [b.keys.clone() for b in bank.blocks]
    model.generate(input_ids=question_ids(tokenizer), bank=bank)
    assert all(torch.equal(a, b.keys) for a, b in zip(keys, bank.blocks))


def test_sampling_settings_reach_the_decoding(tokenizer):
    model = tiny_lychee()
    doc, question = document_ids(tokenizer, 100), question_ids(tokenizer)
    torch.manual_seed(1)
    first = model.generate(input_ids=question, context_ids=doc, do_sample=True, temperature=5.0, max_new_tokens=8)
    torch.manual_seed(2)
    second = model.generate(input_ids=question, context_ids=doc, do_sample=True, temperature=5.0, max_new_tokens=8)
    assert not torch.equal(first, second)


@pytest.mark.compat
def test_streamer_receives_the_final_answer(tokenizer):
    from transformers import TextIteratorStreamer

    model = tiny_lychee()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    out = model.generate(input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 100), streamer=streamer)
    streamed = "".join(streamer)
    assert streamed and streamed == tokenizer.decode(out[0, question_ids(tokenizer).shape[1] :])


def test_memory_generation_config_fixes_the_update_length(tokenizer):
    from transformers import GenerationConfig

    model = tiny_lychee()
    fixed = GenerationConfig(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    out = model.generate(
        input_ids=question_ids(tokenizer),
        context_ids=document_ids(tokenizer, 150),
        memory_generation_config=fixed,
        return_dict_in_generate=True,
    )
    assert [r.tokens_decoded for r in out.trace[0]] == [5, 5, 5]
    first = out.trace[0][0]
    expected_prompt = model.config.template_length("update") + question_ids(tokenizer).shape[1]
    assert first.prompt_tokens == expected_prompt + len(model.config.initial_memory_ids)
    assert out.trace[0][1].prompt_tokens == expected_prompt + len(first.memory_ids)


class _TickingClock:
    """perf_counter() advances by exactly one second per call: every timed region lasts 1 s."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("gate_type", ["query_likelihood", "classifier"])
def test_gate_seconds_are_each_blocks_share_and_add_up_to_the_scoring_passes(gate_type, tokenizer, monkeypatch):
    from lychee_hf.modeling import reasoner_lychee

    model = tiny_lychee(gate_type=gate_type)
    if gate_type == "classifier":  # reads the memory, so it rescores the blocks ahead after each update
        peft = pytest.importorskip("peft")
        from lychee_hf.modeling.adapters_lychee import BACKBONE_LORA_TARGETS

        model.add_role_adapter(
            peft.LoraConfig(r=4, target_modules=BACKBONE_LORA_TARGETS, init_lora_weights=False), "gate"
        )
    passes = []
    score_blocks = type(model.gate).score_blocks

    def counted(self, model, bank, start, *args):
        passes.append(len(bank) - start)
        return score_blocks(self, model, bank, start, *args)

    monkeypatch.setattr(type(model.gate), "score_blocks", counted)
    monkeypatch.setattr(reasoner_lychee, "time", _TickingClock())
    out = model.generate(
        input_ids=question_ids(tokenizer),
        context_ids=document_ids(tokenizer, 300),
        return_dict_in_generate=True,
        gate_threshold=0.0,
        do_sample=False,
    )
    trace = out.trace[0]
    # Each pass lasts 1 s on the ticking clock: the records share exactly that, however often the gate rescored.
    assert sum(r.gate_seconds for r in trace) == pytest.approx(len(passes))
    assert len(trace) == passes[0]
    if gate_type == "query_likelihood":  # one pass over every block: each pays its share, block 0 too
        assert all(r.gate_seconds == pytest.approx(1.0 / len(trace)) for r in trace)
    else:  # block 0's update threw away the scores of the blocks ahead: their cost is block 0's
        assert len(passes) > 1 and trace[0].gate_seconds == pytest.approx(1.0)


# The per-block fields of `lychee-hf ask --json` (the CLI's public names); `to_dict` must keep every one.
CLI_TRACE_FIELDS = {
    "block",
    "span",
    "gate_score",
    "kept",
    "gate_decision",
    "memory_tokens",
    "memory",
    "tokens_decoded",
    "seconds",
}


def test_trace_records_the_exact_prompt_ids_of_every_turn(tokenizer):
    """Each memory update's and the final answer's prompt ids, as fed to generate, are in the trace."""
    model = tiny_lychee()
    question = question_ids(tokenizer)
    out = model.generate(
        input_ids=question,
        context_ids=document_ids(tokenizer, 150),
        gate_threshold=1.0,
        gate_max_blocks=2,
        gate_keep_last=True,
        return_dict_in_generate=True,
    )
    trace, config = out.trace[0], model.config
    memory = torch.tensor(config.initial_memory_ids)
    assert [r.kept for r in trace] == [True, False, True]
    for record in trace:
        expected = build_prompt(config.update_template_ids, question[0], memory).tolist() if record.kept else []
        assert list(record.prompt_ids) == expected and record.prompt_tokens == len(expected)
        memory = torch.tensor(record.memory_ids, dtype=torch.long)
    assert trace.answer_prompt_ids == build_prompt(config.final_template_ids, question[0], memory).tolist()
    answer = out.sequences[0, question.shape[1] :].tolist()
    assert trace.answer_ids == answer[: len(trace.answer_ids)] and len(trace.answer_ids) > 0


def test_trace_to_dict_has_the_cli_fields_and_the_answer(tokenizer):
    model = tiny_lychee()
    question = question_ids(tokenizer)
    out = model.generate(input_ids=question, context_ids=document_ids(tokenizer, 150), return_dict_in_generate=True)
    trace = out.trace[0]
    row = trace.to_dict(tokenizer)
    assert row["answer"] == tokenizer.decode(out.sequences[0, question.shape[1] :], skip_special_tokens=True).strip()
    assert row["answer_prompt_tokens"] == len(trace.answer_prompt_ids)
    assert row["answer_tokens"] == len(trace.answer_ids)
    assert [entry["block"] for entry in row["trace"]] == [0, 1, 2]
    for entry, record in zip(row["trace"], trace):
        assert CLI_TRACE_FIELDS <= set(entry) and entry == record.to_dict(tokenizer)
        assert entry["memory"] == tokenizer.decode(record.memory_ids, skip_special_tokens=True)
        assert entry["prompt_tokens"] == record.prompt_tokens and entry["seconds"] >= 0
    json.dumps(row)  # plain JSON values only


def test_memory_keyword_still_passes_the_bank_with_a_future_warning(model, tokenizer, doc):
    bank, question = model.compress(doc), question_ids(tokenizer)
    with pytest.warns(FutureWarning, match="bank="):
        old = model.generate(input_ids=question, memory=bank)
    assert torch.equal(old, model.generate(input_ids=question, bank=bank))


def test_the_bank_given_twice_is_refused(model, tokenizer, doc):
    bank = model.compress(doc)
    with pytest.raises(ValueError, match="bank once"):
        model.generate(input_ids=question_ids(tokenizer), bank=bank, memory=bank)
