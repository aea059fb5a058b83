"""Compressing a document given as text, so that its bank keeps the text and each block's characters (evidence).

bank = compress_text(model, tokenizer, open("report.txt").read())
out = model.generate(input_ids=question_ids, bank=bank, return_dict_in_generate=True)
out.trace[0].to_dict(tokenizer)["evidence"]   # quoted passages with character offsets into the text
"""

import torch

from .modeling import DocumentText, LycheeMemoryBank, chunk_char_spans


def encode_document(
    tokenizer, text: str, chunk_size: int, source: str = "the document"
) -> tuple[torch.LongTensor, DocumentText | None]:
    """The document's (1, N) token ids and its `DocumentText` (None when the tokenizer gives no character offsets:
    a slow tokenizer; the bank then answers without evidence).

    Raises:
        `ValueError` when the text is empty after tokenization (naming `source`, e.g. "context report.txt").
    """
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        encoded = None
    if encoded is None or "offset_mapping" not in encoded:
        ids, document = tokenizer.encode(text, add_special_tokens=False), None
    else:
        ids = encoded["input_ids"]
        document = DocumentText(text, tuple(chunk_char_spans(encoded["offset_mapping"], chunk_size))) if ids else None
    if not ids:
        raise ValueError(f"{source} is empty after tokenization")
    return torch.tensor([ids]), document


def compress_text(model, tokenizer, text: str, source: str = "the document", **compress_kwargs) -> LycheeMemoryBank:
    """`model.compress` of `text`, with the text kept in the bank (`bank.document_text`) for evidence.

    Args:
        model (`LycheeMemoryForCausalLM`): the model.
        tokenizer: its tokenizer (a fast one gives the character offsets evidence needs).
        text (`str`): the document.
        source (`str`): how an error names the document (e.g. "context report.txt").
        **compress_kwargs: for `model.compress` (`show_progress`, `bank_dtype`, `offload_to_cpu`).
    """
    ids, document = encode_document(tokenizer, text, model.config.chunk_size, source)
    bank = model.compress(ids, **compress_kwargs)
    if document is not None:
        bank.attach_text(document.text, list(document.chars))
    return bank
