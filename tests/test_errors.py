import pytest
import torch

from lychee_hf.testing import document_ids, question_ids, tiny_lychee


def test_empty_context_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="context is empty"):
        model.generate(input_ids=question_ids(tokenizer), context_ids=torch.zeros(1, 0, dtype=torch.long))


def test_fully_masked_context_row_is_refused(model, tokenizer):
    doc = document_ids(tokenizer, 20)
    with pytest.raises(ValueError, match=r"context is empty \(rows \[0\]"):
        model.generate(input_ids=question_ids(tokenizer), context_ids=doc, context_attention_mask=torch.zeros_like(doc))


def test_context_mask_shape_mismatch_is_refused(model, tokenizer):
    doc = document_ids(tokenizer, 20)
    with pytest.raises(ValueError, match=r"context_attention_mask has shape \(1, 19\) but context_ids has \(1, 20\)"):
        model.generate(input_ids=question_ids(tokenizer), context_ids=doc, context_attention_mask=torch.ones(1, 19))


def test_context_ids_outside_vocabulary_are_refused(model, tokenizer):
    doc = document_ids(tokenizer, 20)
    doc[0, 3] = 10_000
    with pytest.raises(ValueError, match=r"context_ids holds ids outside the vocabulary \[0, 400\)"):
        model.generate(input_ids=question_ids(tokenizer), context_ids=doc)


def test_question_ids_outside_vocabulary_are_refused(model, tokenizer):
    with pytest.raises(ValueError, match="input_ids holds ids outside the vocabulary"):
        model.generate(input_ids=torch.tensor([[5, -1]]), context_ids=document_ids(tokenizer, 20))


def test_rows_of_questions_and_documents_must_match(model, tokenizer):
    with pytest.raises(ValueError, match="one document per question"):
        model.generate(input_ids=question_ids(tokenizer).repeat(2, 1), context_ids=document_ids(tokenizer, 20))


def test_context_and_memory_together_are_refused(model, tokenizer):
    doc = document_ids(tokenizer, 20)
    with pytest.raises(ValueError, match="either context_ids"):
        model.generate(input_ids=question_ids(tokenizer), context_ids=doc, bank=model.compress(doc))


def test_compress_takes_one_document(model, tokenizer):
    with pytest.raises(ValueError, match="use compress_batch"):
        model.compress(document_ids(tokenizer, 20).repeat(2, 1))


def test_bank_from_other_settings_is_refused(tokenizer):
    lossless = tiny_lychee(compression_mode="lossless")
    bank = tiny_lychee().compress(document_ids(tokenizer, 20))
    with pytest.raises(ValueError, match="compression_mode: bank has 'memory_tokens', model has 'lossless'"):
        lossless.generate(input_ids=question_ids(tokenizer), bank=bank)


def test_bank_from_other_weights_is_refused(tokenizer):
    bank = tiny_lychee(seed=0).compress(document_ids(tokenizer, 20))
    with pytest.raises(ValueError, match="weights_digest"):
        tiny_lychee(seed=1).generate(input_ids=question_ids(tokenizer), bank=bank)


def test_too_long_question_is_refused_before_any_work(model, tokenizer):
    question = torch.full((1, 4000), 5)
    with pytest.raises(ValueError, match="shorten the question"):
        model.generate(input_ids=question, context_ids=document_ids(tokenizer, 20))
