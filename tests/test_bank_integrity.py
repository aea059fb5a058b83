"""Banks that are cut short, tampered with or damaged are detected; an interrupted compress can be resumed."""

import errno
import json
import re

import pytest
import torch

from lychee_hf import LycheeMemoryBank, LycheeMemoryBlock, LycheeMemoryForCausalLM
from lychee_hf.bank_tools import compress_to_disk
from lychee_hf.cli import main
from lychee_hf.modeling import bank_storage_lychee
from lychee_hf.modeling.memory_bank_lychee import MemoryBankError
from lychee_hf.testing import document_ids, question_ids, tiny_tokenizer

TEXT = "Alice was born in Paris. Paris is the capital of France. " * 12 + "The secret code is 4721. " * 3


@pytest.fixture(scope="module")
def doc(tokenizer):
    return document_ids(tokenizer, 300, seed=1)  # 5 blocks


def interrupted(model, ids, out, after_calls: int = 2, error: BaseException | None = None):
    """Runs `compress_to_disk` (one shard per chunk) and interrupts it inside the compress call `after_calls`+1."""
    calls = {"n": 0}
    compress = model.compress

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise error or KeyboardInterrupt
        return compress(*args, **kwargs)

    model.compress = failing
    try:
        with pytest.raises(type(error) if error else KeyboardInterrupt):
            compress_to_disk(model, ids, out, chunks_per_write=1, max_shard_size=1)
    finally:
        del model.compress


def test_an_interrupted_compress_leaves_a_bank_that_readers_refuse(model, doc, tmp_path):
    interrupted(model, doc, tmp_path / "bank")
    with pytest.raises(MemoryBankError, match=r"incomplete: its writing stopped after 128 of 300 tokens.*--resume"):
        LycheeMemoryBank.from_pretrained(tmp_path / "bank")


def test_generate_refuses_an_unfinished_bank_opened_on_purpose(model, doc, tmp_path, tokenizer):
    interrupted(model, doc, tmp_path / "bank")
    partial = LycheeMemoryBank.from_pretrained(tmp_path / "bank", allow_incomplete=True)
    assert len(partial) == 2 and not partial.complete
    with pytest.raises(MemoryBankError, match="covers only 128 tokens.*--resume"):
        model.generate(input_ids=question_ids(tokenizer), bank=partial)


def test_a_full_disk_during_compress_leaves_a_bank_that_readers_refuse(model, doc, tmp_path, monkeypatch):
    original, calls = bank_storage_lychee.write_shard, {"n": 0}

    def full_disk(path, tensors):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, tensors)

    monkeypatch.setattr(bank_storage_lychee, "write_shard", full_disk)
    with pytest.raises(OSError, match="No space left"):
        compress_to_disk(model, doc, tmp_path / "bank", chunks_per_write=1, max_shard_size=1)
    with pytest.raises(MemoryBankError, match="incomplete"):
        LycheeMemoryBank.from_pretrained(tmp_path / "bank")
    assert not list((tmp_path / "bank").glob("*.tmp"))


def test_resume_finishes_the_bank_as_an_uninterrupted_run_would(model, doc, tmp_path):
    interrupted(model, doc, tmp_path / "cut")
    resumed = compress_to_disk(model, doc, tmp_path / "cut", chunks_per_write=1, max_shard_size=1, resume=True)
    whole = compress_to_disk(model, doc, tmp_path / "whole", chunks_per_write=1, max_shard_size=1)
    assert resumed.complete and resumed.spans == whole.spans
    for index in range(len(whole)):
        assert torch.equal(resumed.block(index).keys, whole.block(index).keys)


def test_resume_refuses_a_bank_of_another_document(model, doc, tmp_path, tokenizer):
    interrupted(model, doc, tmp_path / "cut")
    other = document_ids(tokenizer, 300, seed=8)
    with pytest.raises(MemoryBankError, match="another document.*--overwrite"):
        compress_to_disk(model, other, tmp_path / "cut", resume=True)


def test_compressing_again_without_resume_or_overwrite_is_refused_with_both_options(model, doc, tmp_path):
    interrupted(model, doc, tmp_path / "cut")
    with pytest.raises(MemoryBankError, match="unfinished bank: --resume continues it.*--overwrite"):
        compress_to_disk(model, doc, tmp_path / "cut")


def test_overwrite_replaces_the_bank_and_keeps_other_files(model, doc, tmp_path, tokenizer):
    interrupted(model, doc, tmp_path / "cut")
    (tmp_path / "cut" / "notes.txt").write_text("mine")
    bank = compress_to_disk(model, document_ids(tokenizer, 100, seed=4), tmp_path / "cut", overwrite=True)
    assert bank.complete and bank.num_tokens == 100
    assert (tmp_path / "cut" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "cut").glob("shard-*")) == ["shard-00000.safetensors"]


def test_overwrite_refuses_a_folder_that_holds_no_bank(model, doc, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MemoryBankError, match="holds no memory bank"):
        compress_to_disk(model, doc, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cut_bank(checkpoint, tmp_path):
    """The bank `lychee-hf compress` of `context.txt` would write, interrupted after two chunks."""
    (tmp_path / "context.txt").write_text(TEXT)
    loaded = LycheeMemoryForCausalLM.from_pretrained(checkpoint)
    ids = torch.tensor([tiny_tokenizer().encode(TEXT, add_special_tokens=False)])
    interrupted(loaded, ids, tmp_path / "bank")
    return tmp_path / "bank"


@pytest.mark.parametrize(
    "command",
    [["ask", "--bank", "{bank}", "--question", "q"], ["info", "{bank}"], ["push", "{bank}", "--repo-id", "a/b"]],
)
def test_cli_refuses_an_interrupted_bank(checkpoint, cut_bank, command, capsys):
    args = [part.format(bank=cut_bank) for part in command]
    args += ["--model", str(checkpoint)] if command[0] == "ask" else []
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "--resume" in err and "Traceback" not in err


def test_cli_compress_resume_completes_an_interrupted_bank(checkpoint, cut_bank, capsys):
    context = str(cut_bank.parent / "context.txt")
    common = ["compress", "--model", str(checkpoint), "--context", context, "--out", str(cut_bank), "--quiet"]
    assert main(common) == 2 and "--resume" in capsys.readouterr().err
    assert main([*common, "--resume"]) == 0
    assert LycheeMemoryBank.from_pretrained(cut_bank).complete
    assert main(["ask", "--model", str(checkpoint), "--bank", str(cut_bank), "--question", "Code?", "--quiet"]) == 0


def test_cli_compress_writes_the_requested_bank_dtype(checkpoint, tmp_path, capsys):
    (tmp_path / "context.txt").write_text(TEXT)
    code = main(
        ["compress", "--model", str(checkpoint), "--context", str(tmp_path / "context.txt"), "--out",
         str(tmp_path / "b"), "--bank-dtype", "int8", "--quiet"]
    )  # fmt: skip
    assert code == 0 and "int8" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "b")]) == 0
    info = capsys.readouterr().out
    assert "bank_dtype" in info and "int8" in info and "checksums match" in info


def test_info_verifies_every_block_file(model, doc, tmp_path, capsys):
    model.compress(doc).save_pretrained(tmp_path, max_shard_size=1)
    path = tmp_path / "shard-00003.safetensors"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x10
    path.write_bytes(bytes(data))
    assert main(["info", str(tmp_path)]) == 2
    assert "corrupted" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- manifest
def _blocks(manifest):
    return manifest["blocks"]


MANIFEST_CASES = {
    "deleted record": (lambda m: _blocks(m).pop(1), "missing, repeated or out of order"),
    "last record deleted": (lambda m: _blocks(m).pop(), "blocks are missing"),
    "reordered records": (lambda m: _blocks(m).reverse(), "missing, repeated or out of order"),
    "duplicated record": (lambda m: _blocks(m).insert(1, dict(_blocks(m)[1])), "missing, repeated or out of order"),
    "span past the document": (lambda m: _blocks(m)[-1].update(span=[128, 900]), "spans 772 > chunk_size 64"),
    "empty span": (lambda m: _blocks(m)[0].update(span=[0, 0]), "is empty"),
    "span of floats": (lambda m: _blocks(m)[0].update(span=[0.0, 64.0]), "is not \\[start, end\\]"),
    "parent-folder file": (lambda m: m["shards"][0].update(file="../x.safetensors"), "'../x.safetensors'"),
    "absolute file": (lambda m: m["shards"][0].update(file="/etc/passwd"), "'/etc/passwd'"),
    "same shard twice": (lambda m: m["shards"].append(dict(m["shards"][0])), "listed twice"),
    "unknown shard": (lambda m: _blocks(m)[0].update(shard=7), "names no shard"),
    "missing blocks": (lambda m: m.pop("blocks"), "key 'blocks' is missing"),
    "null blocks": (lambda m: m.update(blocks=None), "'blocks' is None"),
    "block as a list": (lambda m: _blocks(m).__setitem__(0, []), "blocks\\[0\\] is not an object"),
    "missing fingerprint": (lambda m: m.pop("fingerprint"), "key 'fingerprint' is missing"),
    "bad checksum": (lambda m: _blocks(m)[0].update(sha256="abc"), "sha256 'abc'"),
    "bad shape": (lambda m: m.update(block_shape=[2, 2]), "block_shape"),
    "shape against fingerprint": (lambda m: m.update(block_shape=[3, 2, 16, 16]), "disagrees with fingerprint"),
    "unknown storage": (lambda m: m.update(storage={"dtype": "int3"}), "storage"),
    "completeness not a bool": (lambda m: m.update(complete="yes"), "'complete' is 'yes'"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_a_tampered_manifest_is_one_clear_error(model, doc, tmp_path, case):
    model.compress(doc[:, :150]).save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "bank.json").read_text())
    change, message = MANIFEST_CASES[case]
    change(manifest)
    (tmp_path / "bank.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryBankError, match="not a valid memory-bank manifest") as error:
        LycheeMemoryBank.from_pretrained(tmp_path)
    assert re.search(message, str(error.value)), str(error.value)


def test_saving_blocks_out_of_document_order_is_refused_before_writing(model, doc, tmp_path):
    bank = model.compress(doc)
    shuffled = LycheeMemoryBank([bank.block(1), bank.block(0)], bank.fingerprint)
    with pytest.raises(MemoryBankError, match="Block 0 spans \\[64, 128\\) but the blocks before it end at 0"):
        shuffled.save_pretrained(tmp_path / "bank")
    assert not (tmp_path / "bank").exists()


@pytest.mark.parametrize("content", ["[]", "null", '"text"'])
def test_a_manifest_that_is_not_an_object_is_one_clear_error(tmp_path, content):
    (tmp_path / "bank.json").write_text(content)
    with pytest.raises(MemoryBankError, match="not a JSON object"):
        LycheeMemoryBank.from_pretrained(tmp_path)


def test_push_dry_run_refuses_a_tampered_bank(model, doc, tmp_path, capsys):
    model.compress(doc).save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "bank.json").read_text())
    manifest["shards"][0]["file"] = "../outside.safetensors"
    (tmp_path / "bank.json").write_text(json.dumps(manifest))
    assert main(["push", str(tmp_path), "--repo-id", "me/bank", "--dry-run"]) == 2
    assert "not a valid memory-bank manifest" in capsys.readouterr().err


def test_push_plan_leaves_out_files_of_an_interrupted_write(model, doc, tmp_path):
    from lychee_hf.hub import plan_upload

    model.compress(doc).save_pretrained(tmp_path)
    (tmp_path / "shard-00007.safetensors.tmp").write_bytes(b"half a shard")
    (tmp_path / "notes.md").write_text("mine")
    files = [path for path, _ in plan_upload(tmp_path, "me/bank").files]
    assert sorted(files) == ["README.md", "bank.json", "notes.md", "shard-00000.safetensors"]


@pytest.fixture
def complete_bank(model, doc, tmp_path):
    """A complete 2-block float16 bank on disk, opened from there, and the document's next 64 tokens' blocks."""
    model.compress(doc[:, :128]).save_pretrained(tmp_path / "bank")
    return LycheeMemoryBank.from_pretrained(tmp_path / "bank"), model.compress(doc[:, 128:256]), tmp_path / "bank"


def test_a_failed_append_leaves_the_complete_bank_readable(complete_bank):
    bank, more, folder = complete_bank
    block = more.block(0)
    huge = LycheeMemoryBlock(block.keys * 1e6, block.values, block.mask, block.span)  # beyond float16's range
    bank.append(LycheeMemoryBank([huge, more.block(1)], more.fingerprint))
    with pytest.raises(MemoryBankError, match="beyond float16's range"):
        bank.save_pretrained(folder)
    again = LycheeMemoryBank.from_pretrained(folder)
    assert again.complete and len(again) == 2 and again.verify() == 2
    assert sorted(p.name for p in folder.iterdir()) == ["bank.json", "shard-00000.safetensors"]


def test_a_full_disk_during_an_append_keeps_the_old_bank_and_the_retry_succeeds(complete_bank, monkeypatch):
    bank, more, folder = complete_bank
    bank.append(more)
    original, calls = bank_storage_lychee.write_shard, {"n": 0}

    def full_disk(path, tensors):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, tensors)

    monkeypatch.setattr(bank_storage_lychee, "write_shard", full_disk)
    with pytest.raises(OSError, match="No space left"):
        bank.save_pretrained(folder, max_shard_size=1)  # one shard per block: the second new shard fails
    old = LycheeMemoryBank.from_pretrained(folder)
    assert old.complete and len(old) == 2 and old.verify() == 2
    assert sorted(p.name for p in folder.iterdir()) == ["bank.json", "shard-00000.safetensors"]
    monkeypatch.setattr(bank_storage_lychee, "write_shard", original)
    bank.save_pretrained(folder, max_shard_size=1)  # the same bank object, retried
    grown = LycheeMemoryBank.from_pretrained(folder)
    assert grown.complete and len(grown) == 4 and grown.verify() == 4


def test_an_interrupted_compress_keeps_every_step_written_before_it(model, tokenizer, tmp_path):
    ids = document_ids(tokenizer, 64 * 9, seed=2)
    interrupted(model, ids, tmp_path / "bank", after_calls=5)
    kept = LycheeMemoryBank.from_pretrained(tmp_path / "bank", allow_incomplete=True)
    assert kept.num_tokens == 5 * 64  # every finished step is on disk: resume loses at most the step it was in


def test_the_cli_writes_every_step_so_resume_loses_at_most_one(checkpoint, tmp_path, monkeypatch):
    (tmp_path / "context.txt").write_text(TEXT * 5)  # 9+ chunks of the tiny model: two steps of 8
    compress, calls = LycheeMemoryForCausalLM.compress, {"n": 0}

    def interrupted_in_the_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return compress(self, *args, **kwargs)

    args = ["compress", "--model", checkpoint, "--context", tmp_path / "context.txt", "--out", tmp_path / "bank"]
    monkeypatch.setattr(LycheeMemoryForCausalLM, "compress", interrupted_in_the_second_step)
    assert main([str(word) for word in args] + ["--quiet"]) == 130
    kept = LycheeMemoryBank.from_pretrained(tmp_path / "bank", allow_incomplete=True)
    assert not kept.complete and kept.num_tokens == 8 * 64  # the first step's 8 chunks
    monkeypatch.setattr(LycheeMemoryForCausalLM, "compress", compress)
    assert main([str(word) for word in args] + ["--quiet", "--resume"]) == 0
    whole = LycheeMemoryBank.from_pretrained(tmp_path / "bank")
    assert whole.verify() == len(whole) and whole.num_tokens > kept.num_tokens


def test_a_first_block_that_does_not_start_the_document_is_named_so(model, doc, tmp_path):
    model.compress(doc[:, :150]).save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "bank.json").read_text())
    manifest["blocks"].reverse()
    (tmp_path / "bank.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryBankError, match=r"block 0's span \[128, 150\] does not start at 0") as error:
        LycheeMemoryBank.from_pretrained(tmp_path)
    assert "block -1" not in str(error.value)


@pytest.mark.parametrize("failure", ["corrupted block", "interrupt"])
def test_a_failed_bank_convert_leaves_nothing_so_the_retry_runs(model, doc, tmp_path, monkeypatch, failure):
    model.compress(doc).save_pretrained(tmp_path / "source", max_shard_size=1)  # one shard per block
    last = sorted((tmp_path / "source").glob("shard-*.safetensors"))[-1]
    original = last.read_bytes()
    if failure == "corrupted block":  # the first blocks convert, then the last one fails its checksum
        last.write_bytes(original[:-2] + bytes([original[-2] ^ 0x10]) + original[-1:])
    else:
        write_shard, calls = bank_storage_lychee.write_shard, {"n": 0}

        def interrupted(path, tensors):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return write_shard(path, tensors)

        monkeypatch.setattr(bank_storage_lychee, "write_shard", interrupted)
    destination = tmp_path / "converted"
    args = ["bank", "convert", tmp_path / "source", destination, "--bank-dtype", "int8", "--max-shard-size", "0.001"]
    assert main([str(word) for word in args]) in (2, 130)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # no destination, no hidden leftovers
    last.write_bytes(original)
    monkeypatch.undo()
    assert main([str(word) for word in args]) == 0
    converted = LycheeMemoryBank.from_pretrained(destination)
    assert converted.bank_dtype == "int8" and converted.verify() == len(converted) == 5


def test_bank_convert_into_an_empty_folder_puts_the_bank_there(model, doc, tmp_path):
    model.compress(doc).save_pretrained(tmp_path / "source")
    (tmp_path / "empty").mkdir()
    assert main(["bank", "convert", str(tmp_path / "source"), str(tmp_path / "empty")]) == 0
    assert LycheeMemoryBank.from_pretrained(tmp_path / "empty").verify() == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "source"]


def test_bank_convert_into_a_file_is_refused_by_name(model, doc, tmp_path, capsys):
    model.compress(doc).save_pretrained(tmp_path / "source")
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["bank", "convert", str(tmp_path / "source"), str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt is a file: choose a new folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
