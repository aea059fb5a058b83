"""Extractive answers (`answer_from="evidence"`): candidates are exact spans of the best read passage, the reasoner
scores them, the trace says where the answer came from, and "not found" and streamers still see the final answer."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import TextStreamer

from lychee_hf.modeling import build_prompt, role_adapter
from lychee_hf.modeling.extract_lychee import answer_candidates, candidate_scores, copied_span
from lychee_hf.testing import question_ids, run_cli, save_tiny_checkpoint, tiny_lychee
from lychee_hf.text_banks import compress_text

TEXT = (
    "The office opens early on weekdays. The team meets in the office.\n" * 4
    + "2.1 Invoices for data migration fall due within 37 days; disputed amounts within 87 days.\n"
    + "The office opens early on weekdays. The team meets in the office.\n" * 4
)
QUESTION = "When do invoices for data migration fall due?"
DOCS = Path(__file__).parent.parent / "docs" / "python-api.md"


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=6, memory_budget=8, gate_type="always_related")


@pytest.fixture(scope="module")
def bank(model, tokenizer):
    return compress_text(model, tokenizer, TEXT)


def ask(model, tokenizer, bank, question=QUESTION, pass_tokenizer=True, **kwargs):
    ids = question_ids(tokenizer, question)
    if pass_tokenizer:  # as the CLI does: extraction and "not found" read the text through it
        kwargs["tokenizer"] = tokenizer
    out = model.generate(input_ids=ids, bank=bank, return_dict_in_generate=True, **kwargs)
    return out, out.trace[0]


def test_candidates_are_numbers_with_their_units_names_and_codes():
    passage = "Invoices from Avocet Property Services fall due within 37 days; see billing_terms_v2.pdf or --late-fees."
    found = answer_candidates(passage, "When do invoices fall due?")
    assert {"37 days", "37", "Avocet Property Services", "billing_terms_v2.pdf", "--late-fees"} <= set(found)


def test_candidates_skip_the_label_the_question_words_and_a_lone_first_word():
    found = answer_candidates("2.1 Payment for hosting is due within 37 days.", "What payment is due for hosting?")
    assert "2.1" not in found and "Payment" not in found
    assert answer_candidates("Q: Who handles refunds?", "Who handles refunds?") == []
    assert "Omar Brandt" in answer_candidates("Omar Brandt handles refunds, I think.", "Who handles refunds?")
    assert "I" not in answer_candidates("Omar Brandt handles refunds, I think.", "Who handles refunds?")


def test_candidates_never_cross_a_clause_s_punctuation_or_a_table_column_and_keep_thousands_separators():
    found = answer_candidates(
        "With Ama Boateng on leave from 8 February 2026, the cover will be Pablo Byrne; Ashworth Ltd will help.",
        "Who covers the role?",
    )
    assert "Pablo Byrne" in found and "8 February 2026" in found
    assert not [span for span in found if "," in span or ";" in span]
    assert "£1,350,000" in answer_candidates("The cap is £1,350,000 (was £2,000,000).", "What is the cap?")
    row = answer_candidates("Whitcombe office      £200,500      £293,250", "How much did Whitcombe office spend?")
    assert row == ["£200,500", "£293,250"]


@pytest.mark.compat  # the shared prompt cache (Cache.batch_repeat_interleave) across the supported releases
def test_candidate_scores_in_a_batch_equal_one_candidate_scored_alone(model, tokenizer):
    question = tokenizer.encode(QUESTION, add_special_tokens=False)
    passage = "Invoices fall due within 37 days; disputed ones within 87 days."
    passage = tokenizer.encode(passage, add_special_tokens=False)
    candidates = [tokenizer.encode(text, add_special_tokens=False) for text in ("37 days", "87", "disputed ones")]
    stop = model.generation_config.eos_token_id
    stop = stop[0] if isinstance(stop, list) else stop
    batched = candidate_scores(model, question, passage, candidates, stop)
    prompt = build_prompt(model.config.final_template_ids, torch.tensor(question), torch.tensor(passage))
    for candidate, score in zip(candidates, batched):
        row = candidate + [stop]
        ids = torch.cat([prompt, torch.tensor(row)])[None]
        with role_adapter(model, "reasoner"), torch.no_grad():
            logprobs = model(input_ids=ids).logits[0].float().log_softmax(-1)
        expected = torch.stack([logprobs[prompt.numel() - 1 + t, token] for t, token in enumerate(row)]).mean()
        assert score == pytest.approx(expected.item(), abs=1e-4)


def test_an_extracted_answer_is_copied_from_the_best_passage_and_is_its_first_evidence(model, tokenizer, bank):
    _, trace = ask(model, tokenizer, bank, answer_from="evidence")
    row = trace.to_dict(tokenizer)
    assert row["answer_source"] == "evidence"
    assert row["answer"] in answer_candidates(row["evidence"][0]["text"], QUESTION)
    assert row["evidence"][0]["text"].startswith("2.1 Invoices for data migration")
    assert row["generated_answer"] == tokenizer.decode(trace.generated_answer_ids, skip_special_tokens=True).strip()


def test_the_returned_sequences_end_with_the_extracted_answer(model, tokenizer, bank):
    out, trace = ask(model, tokenizer, bank, answer_from="evidence")
    answer = tokenizer.decode(out.sequences[0, len(trace.question_ids) :], skip_special_tokens=True).strip()
    assert answer == tokenizer.decode(trace.answer_ids, skip_special_tokens=True).strip()


def test_answers_come_from_the_memory_unless_asked(model, tokenizer, bank):
    assert model.config.answer_from == "memory"
    _, trace = ask(model, tokenizer, bank)
    assert trace.answer_source == "memory" and trace.generated_answer_ids == []


def test_without_a_tokenizer_extraction_warns_and_answers_from_the_memory(model, tokenizer, bank):
    with pytest.warns(UserWarning, match=r'answer_from="evidence" needs generate\(tokenizer=\.\.\.\)'):
        _, trace = ask(model, tokenizer, bank, pass_tokenizer=False, answer_from="evidence")
    assert trace.answer_source == "memory"


def test_an_unknown_answer_source_is_refused_by_generate_and_by_the_config(model, tokenizer, bank):
    with pytest.raises(ValueError, match="answer_from='quote' is not one of"):
        ask(model, tokenizer, bank, answer_from="quote")
    with pytest.raises(ValueError, match="answer_from='quote' is not one of"):
        tiny_lychee(answer_from="quote")


def test_not_found_wins_over_extraction_and_keeps_the_generated_answer(tokenizer):
    model = tiny_lychee(max_answer_tokens=6, memory_budget=8, gate_type="query_likelihood", answer_from="evidence")
    bank = compress_text(model, tokenizer, TEXT)
    _, trace = ask(model, tokenizer, bank, answer_not_found=True, gate_threshold=1.0)
    assert trace.not_found and trace.answer_source == "memory"
    assert trace.generated_answer_ids and trace.evidence(tokenizer) == []


def test_a_streamer_gets_the_extracted_answer_not_the_generated_one(model, tokenizer, bank):
    class Collect(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            self.text = getattr(self, "text", "") + text

    streamer = Collect(tokenizer, skip_prompt=True, skip_special_tokens=True)
    _, trace = ask(model, tokenizer, bank, answer_from="evidence", streamer=streamer)
    assert streamer.text.strip() == tokenizer.decode(trace.answer_ids, skip_special_tokens=True).strip()


def test_the_cli_answers_from_the_evidence_when_asked(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", max_answer_tokens=6, memory_budget=8)
    (tmp_path / "doc.txt").write_text(TEXT)
    code, out, err = run_cli("ask", "--model", checkpoint, "--context", tmp_path / "doc.txt", "--question", QUESTION,
                             "--answer-from", "evidence", "--json", tmp_path / "a.json", "--trace")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["answer_source"] == "evidence" and result["answer"] in TEXT
    assert f'(copied from the evidence; the reasoner generated "{result["generated_answer"]}")' in out


def test_the_documented_trace_fields_are_the_ones_to_dict_writes(model, tokenizer, bank):
    _, trace = ask(model, tokenizer, bank)
    row = trace.to_dict(tokenizer)
    documented = DOCS.read_text(encoding="utf-8").split("The fields of `trace.to_dict(tokenizer)`", 1)[1]
    top_level = re.sub(r"\([^)]*\)", "", documented.split("## ", 1)[0])
    names = re.findall(r"`(\w+)`", top_level)
    assert set(names) == set(row)
    per_block = re.findall(r"`(\w+)`", documented.split("(per block:", 1)[1].split(")", 1)[0])
    assert set(per_block) == set(row["trace"][0])


def test_a_question_in_the_document_is_answered_by_the_passage_after_it(model, tokenizer):
    faq = ("The help desk opens at nine. The help desk closes at five.\n" * 3
           + "Q: Who handles refunds at the help desk?\nA: Omar Brandt in the care team.\n"
           + "The help desk opens at nine. The help desk closes at five.\n" * 3)  # fmt: skip
    bank = compress_text(model, tokenizer, faq)
    _, trace = ask(model, tokenizer, bank, question="Who handles refunds at the help desk?", answer_from="evidence")
    assert trace.answer_source == "evidence"
    assert tokenizer.decode(trace.answer_ids, skip_special_tokens=True).strip() in ("Omar Brandt", "Brandt")


def test_the_reasoners_own_answer_is_a_candidate_only_as_whole_words_of_the_passage():
    assert copied_span("The door was painted Bright Green in spring.", "bright green") == "Bright Green"
    assert copied_span("The greenery grew.", "green") is None
    assert copied_span("Anything at all.", "") is None


def test_a_refused_question_is_not_copied_for(model, tokenizer, bank):
    _, trace = ask(model, tokenizer, bank, question="When do invoices for Zorblat fall due?", answer_from="evidence",
                   answer_not_found=True)  # fmt: skip
    assert trace.not_found and trace.not_found_reason == "the question names something no read block contains"
    assert trace.answer_source == "memory" and trace.generated_answer_ids
