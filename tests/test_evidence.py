"""Answers a user can check: evidence quoted from the document with exact character offsets, banks that keep the
text (saved, reloaded, streamed to disk, converted), old banks without it, and "not found" instead of an invention."""

import json

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.bank_tools import compress_to_disk
from lychee_hf.modeling import DocumentTextError
from lychee_hf.modeling.evidence_lychee import following_passage, rank_evidence
from lychee_hf.testing import question_ids, run_cli, save_tiny_checkpoint, tiny_lychee
from lychee_hf.text_banks import compress_text, encode_document

TEXT = (
    "Alice was born in Paris. Paris is the capital of France.\n" * 4
    + "The secret code is 4721. Nobody else knows it.\n"
    + "Alice was born in Paris. Paris is the capital of France.\n" * 4
)


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=6, memory_budget=8)


@pytest.fixture(scope="module")
def bank(model, tokenizer):
    return compress_text(model, tokenizer, TEXT)


def ask(model, tokenizer, bank, question="What is the secret code?", with_tokenizer=False, **kwargs):
    ids = question_ids(tokenizer, question)
    if with_tokenizer:  # generate then also checks the question's names against the read text
        kwargs["tokenizer"] = tokenizer
    out = model.generate(input_ids=ids, bank=bank, return_dict_in_generate=True, **kwargs)
    return out.trace[0]


def test_block_character_spans_cover_the_text_in_order(bank):
    chars = bank.document_text.chars
    assert len(chars) == len(bank) and chars[0][0] == 0 and not TEXT[chars[-1][1] :].strip()
    assert all(a[1] <= b[0] + 1 and a[0] < b[0] for a, b in zip(chars, chars[1:]))  # in order, no gaps


def test_evidence_offsets_point_at_the_quoted_characters(model, tokenizer, bank):
    evidence = ask(model, tokenizer, bank).evidence(tokenizer)
    assert evidence, "the always-related tiny gate reads every block: some passage must match"
    for item in evidence:
        assert TEXT[item.start : item.end] == item.text
    assert "secret code" in evidence[0].text  # the rare words of the question rank the fact's sentence first


def test_evidence_is_the_same_from_a_saved_bank_and_in_the_json_schema(model, tokenizer, bank, tmp_path):
    bank.save_pretrained(tmp_path / "bank")
    assert (tmp_path / "bank" / "document.txt").read_text() == TEXT
    loaded = LycheeMemoryBank.from_pretrained(tmp_path / "bank")
    assert loaded.document_text == bank.document_text
    fresh, saved = ask(model, tokenizer, bank).to_dict(tokenizer), ask(model, tokenizer, loaded).to_dict(tokenizer)
    assert saved["evidence"] == fresh["evidence"] and saved["not_found"] is False


def test_an_old_bank_without_text_loads_and_says_evidence_is_unavailable(model, tokenizer, tmp_path):
    ids, _ = encode_document(tokenizer, TEXT, model.config.chunk_size)
    model.compress(ids).save_pretrained(tmp_path / "old")
    loaded = LycheeMemoryBank.from_pretrained(tmp_path / "old")
    assert loaded.document_text is None
    assert ask(model, tokenizer, loaded).to_dict(tokenizer)["evidence"] is None


def test_a_replaced_document_text_is_caught_by_its_checksum(model, tokenizer, bank, tmp_path):
    bank.save_pretrained(tmp_path / "bank")
    (tmp_path / "bank" / "document.txt").write_text(TEXT.replace("4721", "9999"))
    loaded = LycheeMemoryBank.from_pretrained(tmp_path / "bank")
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert loaded.document_text is None


def test_spans_that_do_not_fit_the_text_are_refused(bank):
    copy = bank.astype("float32")
    with pytest.raises(DocumentTextError, match="do not fit"):
        copy.attach_text("short", [(0, 3)] * (len(copy) - 1) + [(0, 99)])
    with pytest.raises(DocumentTextError, match="character spans for a bank of"):
        copy.attach_text(TEXT, [(0, 3)])


def test_converted_and_streamed_banks_keep_the_text(model, tokenizer, bank, tmp_path):
    assert bank.astype("int8").document_text == bank.document_text
    ids, document = encode_document(tokenizer, TEXT, model.config.chunk_size)
    streamed = compress_to_disk(model, ids, tmp_path / "disk", chunks_per_write=1, text=document)
    assert streamed.document_text == bank.document_text
    assert (tmp_path / "disk" / "document.txt").is_file()


def test_nothing_read_answers_not_found_when_asked(tokenizer):
    model = tiny_lychee(max_answer_tokens=6, memory_budget=8, gate_type="query_likelihood", answer_not_found=True)
    bank = compress_text(model, tokenizer, TEXT)
    trace = ask(model, tokenizer, bank, gate_threshold=1.0)  # no block passes: nothing to answer from
    result = trace.to_dict(tokenizer)
    assert result["not_found"] is True and result["answer"] == "Not found in the document."
    assert result["evidence"] == []
    generated = ask(model, tokenizer, bank, gate_threshold=1.0, answer_not_found=False)
    assert generated.not_found is False


def test_not_found_is_off_unless_the_config_or_the_call_turns_it_on(model, tokenizer, bank):
    assert model.config.answer_not_found is False
    assert ask(model, tokenizer, bank).not_found is False


def test_the_cli_prints_evidence_lines_and_writes_them_to_json(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", max_answer_tokens=4, memory_budget=8)
    (tmp_path / "doc.txt").write_text(TEXT)
    code, out, err = run_cli("ask", "--model", checkpoint, "--context", tmp_path / "doc.txt", "--question",
                             "What is the secret code?", "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    assert "Evidence:" in out and result["evidence"] and result["not_found"] is False
    first = result["evidence"][0]
    assert TEXT[first["start"] : first["end"]] == first["text"] and f"[{first['start']}-{first['end']}]" in out
    code, out, err = run_cli("compress", "--model", checkpoint, "--context", tmp_path / "doc.txt", "--out",
                             tmp_path / "bank")  # fmt: skip
    assert code == 0, err and (tmp_path / "bank" / "document.txt").is_file()
    code, out, err = run_cli("ask", "--model", checkpoint, "--bank", tmp_path / "bank", "--question", "Code?")
    assert code == 0 and "Evidence:" in out


def test_a_bank_made_from_token_ids_only_answers_with_evidence_unavailable_in_the_cli(tmp_path, tokenizer):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", max_answer_tokens=4, memory_budget=8)
    model = tiny_lychee(max_answer_tokens=4, memory_budget=8)
    ids = torch.tensor([tokenizer.encode(TEXT, add_special_tokens=False)])
    model.compress(ids).save_pretrained(tmp_path / "bank")
    code, out, err = run_cli("ask", "--model", checkpoint, "--bank", tmp_path / "bank", "--question", "Code?")
    assert code == 0, err
    assert "Evidence: unavailable" in out


def test_a_question_naming_what_no_read_block_contains_is_not_found(tokenizer):
    model = tiny_lychee(max_answer_tokens=6, memory_budget=8, answer_not_found=True)
    bank = compress_text(model, tokenizer, TEXT)
    asked = ask(model, tokenizer, bank, "Where was Zorblat born?", with_tokenizer=True)
    assert asked.not_found and asked.to_dict(tokenizer)["answer"] == "Not found in the document."
    named = ask(model, tokenizer, bank, "Where was Alice born?", with_tokenizer=True)
    assert named.names_missing(tokenizer) is False


def test_subject_words_the_document_never_uses_are_missing_whatever_their_ending():
    from lychee_hf.modeling.evidence_lychee import document_stems, missing_subject

    stems = document_stems("The Supplier retains invoices for 30 days. The Client pays travel monthly.")
    assert missing_subject("How long are the invoices retained?", stems) == []
    assert missing_subject("Who pays for travelling expenses of the auditor?", stems) == ["expenses", "auditor"]


def test_framing_words_never_count_as_missing():
    from lychee_hf.modeling.evidence_lychee import document_stems, missing_subject

    stems = document_stems("The secret code is 4721.")
    assert missing_subject("Which file should be used for the secret code, and what figure is it?", stems) == []


def test_a_question_about_words_the_document_never_uses_is_not_found(tokenizer):
    model = tiny_lychee(max_answer_tokens=6, memory_budget=8, answer_not_found=True, gate_type="always_related")
    bank = compress_text(model, tokenizer, TEXT)
    lacking = ask(model, tokenizer, bank, "what is the monthly subscription price?", with_tokenizer=True)
    assert lacking.subject_missing(tokenizer) and lacking.not_found
    asked = ask(model, tokenizer, bank, "what is the secret code nobody knows?", with_tokenizer=True)
    assert not asked.subject_missing(tokenizer) and not asked.not_found


def test_the_cli_turns_not_found_off_for_one_run(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", max_answer_tokens=4, memory_budget=8, answer_not_found=True)
    (tmp_path / "doc.txt").write_text(TEXT)
    asked = ["ask", "--model", checkpoint, "--context", tmp_path / "doc.txt", "--question", "Where was Zorblat born?"]
    code, out, err = run_cli(*asked)
    assert code == 0, err
    assert "Not found in the document." in out and "Evidence: none (not found: " in out
    code, out, err = run_cli(*asked, "--no-not-found")
    assert code == 0, err
    assert "Not found in the document." not in out


def test_evidence_weighs_words_by_their_rarity_in_the_whole_document():
    """A clause that repeats the document's title words loses to the one holding the asked fact's rare words,
    although among the read block's own passages the title words are as rare as the fact's."""
    from lychee_hf.modeling.evidence_lychee import rank_evidence

    title = "the Acme Widget Services under this Acme Widget Services Agreement"
    filler = "".join(f"Clause {i} covers {title} for its term. " for i in range(6))
    read = (
        f"The Supplier grants a licence to use {title} for the term. "
        "Invoices for data migration fall due 37 days after the invoice date. "
        "Notices are given in writing. Records are kept in the office."
    )
    document = f"{filler}\n{read}\n{filler}"
    start = len(filler) + 1
    blocks = [(1, start, start + len(read), 0.9)]
    rarity = [(0, len(filler)), (start + len(read) + 1, len(document))]
    question = "What is the payment term for data migration under the Acme Widget Services Agreement?"

    best = rank_evidence(document, blocks, question, "", "", top_k=1, rarity_spans=rarity)[0]
    assert best.text.startswith("Invoices for data migration")
    read_only = rank_evidence(document, blocks, question, "", "", top_k=1)[0]
    assert read_only.text.startswith("The Supplier grants")  # what counting the read block alone ranked first


def test_a_sentence_cut_by_the_block_edge_is_quoted_whole():
    document = "Filler words here. The bakery was founded by Odile Fennick in 1890. More filler follows."
    cut = document.index("Odile")  # the block ends mid-sentence, as 256-token blocks do
    evidence = rank_evidence(document, [(0, 0, cut, 1.0)], "Who founded the bakery?", "", "")
    assert evidence[0].text == "The bakery was founded by Odile Fennick in 1890."
    assert document[evidence[0].start : evidence[0].end] == evidence[0].text


def test_the_passage_after_a_question_is_the_next_sentence_or_line():
    document = "Intro text here.\nQ: Who handles refunds?\nA: Omar Brandt does.\nLast line here."
    start, end = following_passage(document, document.index("?") + 1)
    assert document[start:end] == "A: Omar Brandt does."
    assert following_passage(document, len(document)) is None


def test_a_not_found_answer_says_which_test_refused_it(tokenizer):
    model = tiny_lychee(max_answer_tokens=6, memory_budget=8, gate_type="query_likelihood", answer_not_found=True)
    bank = compress_text(model, tokenizer, TEXT)
    refused = ask(model, tokenizer, bank, gate_threshold=1.0).to_dict(tokenizer)
    assert refused["not_found"] and refused["not_found_reason"] == "no block was read"
    answered = ask(model, tokenizer, bank, answer_not_found=False).to_dict(tokenizer)
    assert answered["not_found"] is False and answered["not_found_reason"] == ""
