"""A saved bank's shards: a size target, lazy memory-mapped reads, appends that write only new data."""

import json

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.bank_tools import bank_bytes_per_block
from lychee_hf.modeling import bank_storage_lychee
from lychee_hf.testing import document_ids, question_ids


@pytest.fixture(scope="module")
def whole(tokenizer):
    return document_ids(tokenizer, 400, seed=2)  # 7 blocks of 64 tokens


def test_blocks_are_grouped_into_shards_of_the_target_size(model, whole, tmp_path):
    per_block = bank_bytes_per_block(model, "float32")
    model.compress(whole).save_pretrained(tmp_path, bank_dtype="float32", max_shard_size=3 * per_block)
    manifest = json.loads((tmp_path / "bank.json").read_text())
    assert [b["shard"] for b in manifest["blocks"]] == [0, 0, 0, 1, 1, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [f"shard-0000{i}.safetensors" for i in range(3)]


class _CountingOpen:
    """Wraps safetensors' `safe_open` and records every tensor read."""

    def __init__(self, monkeypatch):
        self.read: list[str] = []
        original = bank_storage_lychee.safe_open
        counter = self

        class Handle:
            def __init__(self, *args, **kwargs):
                self.inner = original(*args, **kwargs)

            def get_tensor(self, name):
                counter.read.append(name)
                return self.inner.get_tensor(name)

        monkeypatch.setattr(bank_storage_lychee, "safe_open", Handle)


def test_opening_a_bank_reads_no_tensors_and_a_block_reads_only_its_own(model, whole, tmp_path, monkeypatch):
    model.compress(whole).save_pretrained(tmp_path, bank_dtype="int4")
    counting = _CountingOpen(monkeypatch)
    bank = LycheeMemoryBank.from_pretrained(tmp_path)
    assert counting.read == []
    bank.block(4)
    assert counting.read and all(name.startswith("000004.") for name in counting.read)


def test_a_block_is_checked_without_reading_the_rest_of_its_shard(model, whole, tmp_path):
    model.compress(whole).save_pretrained(tmp_path, bank_dtype="float32")
    path = tmp_path / "shard-00000.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # damages the last block stored in the shard
    path.write_bytes(bytes(data))
    bank = LycheeMemoryBank.from_pretrained(tmp_path)
    damaged = [i for i in range(len(bank)) if _fails(bank, i)]
    assert len(damaged) == 1  # every other block of the same file still reads and checks


def _fails(bank, index) -> bool:
    try:
        bank.block(index)
    except ValueError:
        return True
    return False


def test_appending_writes_a_new_shard_and_leaves_the_old_ones_untouched(model, whole, tmp_path, tokenizer):
    model.compress(whole[:, :192]).save_pretrained(tmp_path, bank_dtype="int8")
    first = tmp_path / "shard-00000.safetensors"
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    grown = LycheeMemoryBank.from_pretrained(tmp_path)
    grown.append(model.compress(whole[:, 192:]))
    grown.save_pretrained(tmp_path)
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    reopened = LycheeMemoryBank.from_pretrained(tmp_path)
    assert reopened.spans == [(i, min(i + 64, 400)) for i in range(0, 400, 64)]
    manifest = json.loads((tmp_path / "bank.json").read_text())
    assert [b["shard"] for b in manifest["blocks"]] == [0, 0, 0, 1, 1, 1, 1]
    question = question_ids(tokenizer)
    assert torch.equal(
        model.generate(input_ids=question, bank=reopened),
        model.generate(input_ids=question, bank=model.compress(whole, bank_dtype="int8")),
    )


def test_appending_in_another_format_is_refused(model, whole, tmp_path):
    model.compress(whole[:, :128]).save_pretrained(tmp_path, bank_dtype="int8")
    grown = LycheeMemoryBank.from_pretrained(tmp_path)
    grown.append(model.compress(whole[:, 128:]))
    with pytest.raises(ValueError, match="stores int8 blocks, not int4"):
        grown.save_pretrained(tmp_path, bank_dtype="int4")
