"""Bounded memory at any length: a document's bank goes to a folder on disk as it is compressed and is read back one
block at a time (`compress` / `generate(context_ids=...)` with `bank_dir=`; `lychee-hf ask --context` above
`--max-bank-memory`, in a temporary folder), and answers are those of the bank held in memory."""

import json
import os
import random
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, trainers
from transformers import PreTrainedTokenizerFast

import lychee_hf.text_banks
from lychee_hf import LycheeMemoryBank, LycheeMemoryForCausalLM
from lychee_hf.bank_tools import bank_bytes_per_block
from lychee_hf.commands.arguments import byte_size
from lychee_hf.modeling import chunk_char_spans
from lychee_hf.modeling.bank_writer_lychee import LycheeBankWriter
from lychee_hf.testing import (
    CORPUS,
    cli_peak_rss,
    document_ids,
    question_ids,
    run_cli,
    save_tiny_checkpoint,
    tiny_lychee,
    tiny_tokenizer,
)
from lychee_hf.text_banks import DEFAULT_MAX_BANK_MEMORY, encode_document, text_bank

DOCUMENT = "Alice was born in Paris. Paris is the capital of France. " * 12 + "The secret code is 4721. " * 3
QUESTIONS = ["--question", "What is the secret code?", "--question", "Where was Alice born?"]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    path = tmp_path_factory.mktemp("ctx") / "doc.txt"
    path.write_text(DOCUMENT)
    return path


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """The folder `tempfile` makes its folders in for this test (what TMPDIR names for a real run)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _without_seconds(value):
    """`--json` output without its timings (the only values two runs may differ in)."""
    if isinstance(value, dict):
        return {key: _without_seconds(item) for key, item in value.items() if "seconds" not in key}
    if isinstance(value, list):
        return [_without_seconds(item) for item in value]
    return value


def _spy_compress(monkeypatch) -> list[dict]:
    """Records the keyword arguments of every `model.compress` call, and whether `bank_dir` held a bank after it."""
    calls, original = [], LycheeMemoryForCausalLM.compress

    def recording(self, *args, **kwargs):
        bank = original(self, *args, **kwargs)
        folder = kwargs.get("bank_dir")
        calls.append({**kwargs, "bank_written": folder is not None and (Path(folder) / "bank.json").is_file()})
        return bank

    monkeypatch.setattr(LycheeMemoryForCausalLM, "compress", recording)
    return calls


# ----------------------------------------------------------------------------------------- lychee-hf ask --context
def test_ask_answers_from_a_temporary_bank_as_from_memory(checkpoint, context, tmp_path, temp_root, monkeypatch):
    calls = _spy_compress(monkeypatch)
    outputs = {}
    for size in ("1GB", "0"):
        out = tmp_path / f"answers-{size}.json"
        argv = ["ask", "--model", checkpoint, "--context", context, *QUESTIONS, "--max-bank-memory", size]
        code, printed, err = run_cli(*argv, "--json", out)
        assert code == 0, err
        outputs[size] = (_without_seconds(json.loads(out.read_text())), printed)
    in_memory, on_disk = calls
    assert in_memory.get("bank_dir") is None and in_memory["bank_dtype"] == "float16"
    assert Path(on_disk["bank_dir"]).parent == temp_root and on_disk["bank_written"]  # compressed once, to disk
    assert on_disk["bank_dtype"] == "float16"
    assert outputs["0"] == outputs["1GB"]  # answers, traces and evidence, as written and as printed
    assert all(answer["evidence"] is not None for answer in outputs["0"][0])  # the text went with the bank
    assert list(temp_root.iterdir()) == []  # the temporary bank is gone


@pytest.mark.parametrize("failure", [RuntimeError("the reasoner broke"), KeyboardInterrupt()])
def test_the_temporary_bank_goes_after_a_failure(checkpoint, context, temp_root, monkeypatch, failure):
    seen = []

    def failing_generate(self, *args, bank=None, **kwargs):
        seen.append([path.is_file() for path in bank.stored_files()])
        raise failure

    monkeypatch.setattr(LycheeMemoryForCausalLM, "generate", failing_generate)
    code, _, err = run_cli("ask", "--model", checkpoint, "--context", context, *QUESTIONS, "--max-bank-memory", "0")
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 2), err
    assert seen and all(seen[0])  # the bank was on disk when the question was asked
    assert list(temp_root.iterdir()) == []


def test_the_temporary_bank_goes_when_compression_is_interrupted(checkpoint, context, temp_root, monkeypatch):
    written, original = [], LycheeBankWriter.add

    def interrupted(self, block):
        if written:
            raise KeyboardInterrupt
        original(self, block)
        written.append(self.directory)

    monkeypatch.setattr(LycheeBankWriter, "add", interrupted)
    code, _, err = run_cli("ask", "--model", checkpoint, "--context", context, *QUESTIONS, "--max-bank-memory", "0")
    assert code == 130 and "interrupted" in err
    assert written and written[0].parent == temp_root and list(temp_root.iterdir()) == []


def test_text_bank_keeps_small_banks_in_memory_and_large_ones_on_disk(model, tokenizer, temp_root):
    with text_bank(model, tokenizer, DOCUMENT, show_progress=False) as bank:
        assert bank.stored_files() == [] and bank.bank_dtype == "float16" and bank.document_text is not None
    with text_bank(model, tokenizer, DOCUMENT, max_memory=0, bank_dtype="int8", show_progress=False) as bank:
        files = bank.stored_files()
        assert files and all(path.parent.parent == temp_root for path in files)
        assert bank.bank_dtype == "int8" and bank.document_text.text == DOCUMENT
    assert list(temp_root.iterdir()) == []


def test_a_long_text_is_tokenized_in_pieces_as_it_is_whole(tokenizer, monkeypatch):
    text = _words(tokenizer, 3000, seed=1) + "\n\n" + "\n".join(CORPUS) * 8
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    monkeypatch.setattr(lychee_hf.text_banks, "PIECE_CHARS", 500)
    pieces = lychee_hf.text_banks._encode_in_pieces(tokenizer, text)
    assert pieces is not None and pieces[0].tolist() == whole["input_ids"]  # cut into pieces, and equal
    ids, document = encode_document(tokenizer, text, 64)
    assert ids[0].tolist() == whole["input_ids"]
    assert list(document.chars) == chunk_char_spans(whole["offset_mapping"], 64)


def test_a_tokenizer_whose_tokens_span_words_tokenizes_whole(monkeypatch):
    spanning = Tokenizer(models.BPE(unk_token=None))  # no pre-tokenizer: merges cross spaces
    spanning.decoder = decoders.ByteLevel()
    alphabet = sorted(set("".join(CORPUS)))
    spanning.train_from_iterator(CORPUS * 4, trainer=trainers.BpeTrainer(vocab_size=600, initial_alphabet=alphabet))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=spanning)
    text = "\n".join(CORPUS) * 12
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    monkeypatch.setattr(lychee_hf.text_banks, "PIECE_CHARS", 500)
    assert lychee_hf.text_banks._encode_in_pieces(tokenizer, text) is None  # a cut changed the tokens around it
    ids, document = encode_document(tokenizer, text, 64)
    assert ids[0].tolist() == whole["input_ids"]
    assert list(document.chars) == chunk_char_spans(whole["offset_mapping"], 64)


def test_sizes_on_the_command_line():
    assert byte_size("512MB") == DEFAULT_MAX_BANK_MEMORY  # what `ask --help` calls the default
    assert byte_size("2GB") == 2 * 10**9 and byte_size("1.5GiB") == 3 * 2**29 and byte_size("0") == 0
    assert byte_size("64 kib") == 64 * 1024
    for wrong in ("2", "-1GB", "2 parsecs", "GB", ""):
        with pytest.raises(Exception, match="such as 512MB"):
            byte_size(wrong)
    code, out, _ = run_cli("ask", "--help")
    assert code == 0 and "--max-bank-memory SIZE" in out and "default: 512MB" in " ".join(out.split())


# ----------------------------------------------------------------------------------------- Python API
def test_generate_with_bank_dir_answers_as_in_memory(model, tokenizer, doc, tmp_path):
    question = question_ids(tokenizer)
    expected = model.generate(input_ids=question, context_ids=doc, return_dict_in_generate=True)
    got = model.generate(input_ids=question, context_ids=doc, bank_dir=tmp_path / "bank", return_dict_in_generate=True)
    assert torch.equal(got.sequences, expected.sequences)
    assert _without_seconds(got.trace[0].to_dict(tokenizer)) == _without_seconds(expected.trace[0].to_dict(tokenizer))
    saved = LycheeMemoryBank.from_pretrained(tmp_path / "bank")  # the caller's folder: a complete bank, left there
    assert saved.bank_dtype == "float32" and saved.spans == model.compress(doc).spans


def test_generate_with_bank_dir_writes_one_bank_per_row(model, tokenizer, tmp_path):
    questions = torch.cat([question_ids(tokenizer), question_ids(tokenizer)])
    documents = torch.cat([document_ids(tokenizer, 150), document_ids(tokenizer, 150, seed=1)])
    expected = model.generate(input_ids=questions, context_ids=documents, bank_dtype="int8")
    got = model.generate(input_ids=questions, context_ids=documents, bank_dtype="int8", bank_dir=tmp_path)
    assert torch.equal(got, expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["00000", "00001"]
    assert LycheeMemoryBank.from_pretrained(tmp_path / "00001").bank_dtype == "int8"


def test_compress_with_bank_dir_stores_the_blocks_it_would_keep(model, doc, tmp_path):
    kept = model.compress(doc, bank_dtype="float16")
    streamed = model.compress(doc, bank_dtype="float16", bank_dir=tmp_path / "bank")
    assert len(streamed.stored_files()) == 1 and len(streamed) == len(kept)
    for index in range(len(kept)):
        a, b = kept.block(index), streamed.block(index)
        assert a.span == b.span and torch.equal(a.mask, b.mask)
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_a_bank_writer_starts_a_shard_when_one_is_full(model, doc, tmp_path):
    kept = model.compress(doc)
    writer = LycheeBankWriter(tmp_path, model.memory_fingerprint(), max_shard_size=1)
    for index in range(len(kept)):
        writer.add(kept.block(index))
    assert not LycheeMemoryBank.from_pretrained(tmp_path, allow_incomplete=True).complete  # until finish
    bank = writer.finish()
    assert len(bank.stored_files()) == len(kept) == 3 and bank.complete
    assert all(torch.equal(bank.block(i).keys, kept.block(i).keys) for i in range(len(kept)))


@pytest.mark.parametrize(
    "bank_dir, message",
    [
        (True, "takes a folder path"),
        ("file", "is a file"),
        ("full", "is not empty"),
    ],
)
def test_a_wrong_bank_dir_is_one_clear_error(model, tokenizer, doc, tmp_path, bank_dir, message):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    folder = tmp_path / bank_dir if isinstance(bank_dir, str) else bank_dir
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids=question_ids(tokenizer), context_ids=doc, bank_dir=folder)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_bank_dir_goes_with_a_document_compressed_in_the_call(model, tokenizer, doc, tmp_path):
    bank = model.compress(doc)
    with pytest.raises(ValueError, match="bank_dir applies to context_ids"):
        model.generate(input_ids=question_ids(tokenizer), bank=bank, bank_dir=tmp_path)
    with pytest.raises(ValueError, match="not both"):
        model.compress(doc, offload_to_cpu=True, bank_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------- peak memory
# A tiny model whose lossless blocks are large per token (2 layers x 4 kv heads x head_dim 128: 8 KiB per token in
# float32), so a bank held in memory would dwarf everything else a run allocates.
WIDE = dict(
    num_layers=2,
    num_kv_heads=4,
    head_dim=128,
    compression_mode="lossless",
    chunk_size=1024,
    compression_window=1024,
    memory_budget=2,
    max_answer_tokens=2,
)


def _words(tokenizer, n_tokens: int, seed: int) -> str:
    """Text of random words from the tiny tokenizer's corpus, about `n_tokens` tokens long."""
    words, rng = " ".join(CORPUS).split(), random.Random(seed)
    sample = " ".join(rng.choice(words) for _ in range(1000))
    per_word = len(tokenizer.encode(sample, add_special_tokens=False)) / 1000
    return " ".join(rng.choice(words) for _ in range(int(n_tokens / per_word)))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak RSS from /proc")
def test_peak_memory_of_ask_context_does_not_grow_with_the_document(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", **WIDE)
    tokenizer = tiny_tokenizer()
    peaks, tokens = {}, {}
    for n_tokens in (16_000, 64_000):
        path = tmp_path / f"doc-{n_tokens}.txt"
        path.write_text(_words(tokenizer, n_tokens, seed=n_tokens))
        tokens[n_tokens] = len(tokenizer.encode(path.read_text(), add_special_tokens=False))
        peaks[n_tokens], _, _ = cli_peak_rss(
            "ask", "--model", checkpoint, "--context", path, "--question", "What is the secret code?", "--quiet",
            "--max-bank-memory", "0", env={**os.environ, "OMP_NUM_THREADS": "1"},  # fast on shared cores
        )  # fmt: skip
    blocks = -(-tokens[64_000] // WIDE["chunk_size"])
    bank = blocks * bank_bytes_per_block(tiny_lychee(**WIDE), "float32")  # what the old path held: 0.5 GB
    growth = peaks[64_000] - peaks[16_000]
    assert bank > 400 * 2**20
    assert growth < 0.25 * bank, f"peak RSS grew {growth / 2**20:.0f} MiB for a {bank / 2**20:.0f} MiB bank"
