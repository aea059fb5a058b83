import json

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.bank_tools import compress_to_disk
from lychee_hf.modeling.memory_bank_lychee import MemoryBankError
from lychee_hf.testing import document_ids, question_ids, tiny_lychee


@pytest.fixture
def saved(model, doc, tmp_path):
    model.compress(doc).save_pretrained(tmp_path / "bank", bank_dtype="float32")
    return tmp_path / "bank"


@pytest.mark.compat
def test_save_load_round_trip_gives_identical_answers(model, doc, saved, tokenizer):
    question = question_ids(tokenizer)
    loaded = LycheeMemoryBank.from_pretrained(saved)
    assert len(loaded) == 3 and loaded.spans == [(0, 64), (64, 128), (128, 150)]
    assert torch.equal(
        model.generate(input_ids=question, memory=loaded), model.generate(input_ids=question, context_ids=doc)
    )


def test_saved_bank_is_safetensors_shards_plus_json_manifest(saved):
    manifest = json.loads((saved / "bank.json").read_text())
    assert manifest["format"] == "lychee-memory-bank" and manifest["version"] == 2 and manifest["complete"] is True
    assert manifest["block_shape"] == [2, 2, 16, 16] and manifest["storage"] == {"dtype": "float32"}
    assert sorted(p.name for p in saved.iterdir()) == ["bank.json", "shard-00000.safetensors"]
    assert [b["shard"] for b in manifest["blocks"]] == [0, 0, 0]
    assert not list(saved.glob("*.bin")) and not list(saved.glob("*.pt"))


@pytest.mark.compat
def test_streaming_from_disk_equals_in_memory(model, doc, saved, tokenizer):
    question = question_ids(tokenizer)
    mapped = LycheeMemoryBank.from_pretrained(saved, verify_checksums=False)
    assert torch.equal(
        model.generate(input_ids=question, memory=mapped),
        model.generate(input_ids=question, memory=model.compress(doc)),
    )


def test_fingerprint_mismatch_is_refused_naming_the_setting(saved, tokenizer):
    other = tiny_lychee(memory_budget=8, chunk_size=32, compression_window=32)
    with pytest.raises(MemoryBankError, match="chunk_size: bank has 64, model has 32"):
        other.generate(input_ids=question_ids(tokenizer), memory=LycheeMemoryBank.from_pretrained(saved))


def test_corrupted_block_is_refused(model, saved, tokenizer):
    path = saved / "shard-00000.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last block's tensors
    path.write_bytes(bytes(data))
    bank = LycheeMemoryBank.from_pretrained(saved)
    with pytest.raises(MemoryBankError, match="block 000002 in .*shard-00000.safetensors is corrupted"):
        model.generate(input_ids=question_ids(tokenizer), memory=bank)


def test_truncated_shard_is_refused_when_the_bank_opens(saved):
    path = saved / "shard-00000.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MemoryBankError, match="shard-00000.safetensors has 100 bytes"):
        LycheeMemoryBank.from_pretrained(saved, verify_checksums=False)


def test_garbled_shard_header_is_refused_even_without_checksums(model, saved, tokenizer):
    path = saved / "shard-00000.safetensors"
    data = path.read_bytes()
    path.write_bytes(b"\xff" * 16 + data[16:])  # same size, header unreadable
    bank = LycheeMemoryBank.from_pretrained(saved, verify_checksums=False)
    with pytest.raises(MemoryBankError, match="unreadable"):
        model.generate(input_ids=question_ids(tokenizer), memory=bank)


def test_corrupted_manifest_is_refused(saved):
    (saved / "bank.json").write_text("{not json")
    with pytest.raises(MemoryBankError, match="bank.json is corrupted"):
        LycheeMemoryBank.from_pretrained(saved)


def test_missing_shard_file_is_refused(saved):
    (saved / "shard-00000.safetensors").unlink()
    with pytest.raises(MemoryBankError, match="shard-00000.safetensors is missing"):
        LycheeMemoryBank.from_pretrained(saved)


def test_saving_over_another_bank_is_refused(model, saved, tokenizer):
    other = model.compress(document_ids(tokenizer, 70, seed=5))
    with pytest.raises(MemoryBankError, match="already holds a different memory bank"):
        other.save_pretrained(saved)


def test_saving_into_a_folder_with_other_files_is_refused(model, doc, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MemoryBankError, match="not empty"):
        model.compress(doc).save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_appending_a_growing_document_equals_compressing_it_whole(model, tokenizer, tmp_path):
    whole = document_ids(tokenizer, 200, seed=3)
    bank = model.compress(whole[:, :128])
    bank.save_pretrained(tmp_path / "grow", bank_dtype="float32")
    reopened = LycheeMemoryBank.from_pretrained(tmp_path / "grow")
    reopened.append(model.compress(whole[:, 128:]))
    reopened.save_pretrained(tmp_path / "grow")  # writes only the new block
    grown = LycheeMemoryBank.from_pretrained(tmp_path / "grow")
    assert grown.spans == [(0, 64), (64, 128), (128, 192), (192, 200)]
    question = question_ids(tokenizer)
    assert torch.equal(
        model.generate(input_ids=question, memory=grown), model.generate(input_ids=question, context_ids=whole)
    )


def test_compress_to_disk_streams_blocks_into_a_bank(model, doc, tmp_path, tokenizer):
    bank = compress_to_disk(model, doc, tmp_path / "disk", chunks_per_write=1, bank_dtype="float32", max_shard_size=1)
    assert len(bank) == 3 and len(list((tmp_path / "disk").glob("shard-*.safetensors"))) == 3
    question = question_ids(tokenizer)
    assert torch.equal(
        model.generate(input_ids=question, memory=bank), model.generate(input_ids=question, context_ids=doc)
    )


def test_offloaded_bank_lives_on_cpu(model, doc):
    bank = model.compress(doc, offload_to_cpu=True)
    assert all(bank.block(i).keys.device.type == "cpu" for i in range(len(bank)))


def test_a_bank_larger_than_the_free_disk_is_refused_before_compressing(model, doc, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10_000, 9_000, 1_000))
    with pytest.raises(MemoryBankError, match="needs .* GiB but .* free: free space, choose another --out"):
        compress_to_disk(model, doc, tmp_path / "full")
    assert not (tmp_path / "full").exists()
