"""Storage formats of a memory bank: float copies, KIVI-style int8/int4, old version-1 banks, `bank convert`."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from lychee_hf import LycheeMemoryBank
from lychee_hf.bank_tools import bank_bytes_per_block, compress_to_disk
from lychee_hf.cli import main
from lychee_hf.modeling.bank_storage_lychee import StorageFormat
from lychee_hf.modeling.kv_quant_lychee import QuantizedKV, default_bank_dtype, quantize, rotation_matrix
from lychee_hf.modeling.memory_bank_lychee import MemoryBankError
from lychee_hf.testing import document_ids, question_ids, tiny_lychee


@pytest.fixture(scope="module")
def exact(model, doc):
    return model.compress(doc)


def _max_step(x: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """One quantization step of each group when a group spans all of `dim` (true for the tiny shapes)."""
    return (x.amax(dim, keepdim=True) - x.amin(dim, keepdim=True)) / (2**bits - 1)


@pytest.mark.parametrize("bank_dtype", ["float32", "float16", "bfloat16"])
def test_float_formats_round_trip_as_that_dtype(exact, bank_dtype, tmp_path):
    exact.save_pretrained(tmp_path, bank_dtype=bank_dtype)
    loaded = LycheeMemoryBank.from_pretrained(tmp_path)
    assert loaded.bank_dtype == bank_dtype
    for index in range(len(exact)):
        block, original = loaded.block(index), exact.block(index)
        assert block.keys.dtype == getattr(torch, bank_dtype)
        assert torch.equal(block.keys, original.keys.to(block.keys.dtype))
        assert torch.equal(block.values, original.values.to(block.values.dtype))
        assert torch.equal(block.mask, original.mask) and block.span == original.span


@pytest.mark.parametrize("bank_dtype, bits", [("int8", 8), ("int4", 4)])
def test_unrotated_quantized_formats_round_trip_within_half_a_step(exact, bank_dtype, bits, tmp_path):
    # Without rotation, codes live in the model's basis: each element is within half its group's step.
    plain = dataclasses.replace(
        StorageFormat.for_dtype(bank_dtype), key_rotation=None, value_rotation=None, key_outliers=0
    )
    exact.save_pretrained(tmp_path, bank_dtype=plain)
    loaded = LycheeMemoryBank.from_pretrained(tmp_path)
    for index in range(len(exact)):
        block, original = loaded.block(index), exact.block(index)
        assert isinstance(block.keys, QuantizedKV) and block.keys.bits == bits
        real = original.mask
        keys, values = original.keys[:, :, real], original.values[:, :, real]
        key_error = (block.keys.dequantize()[:, :, real] - keys).abs()
        value_error = (block.values.dequantize()[:, :, real] - values).abs()
        assert bool((key_error <= _max_step(keys, bits, dim=2) * 0.5 + 1e-3).all())  # per channel: over slots
        assert bool((value_error <= _max_step(values, bits, dim=3) * 0.5 + 1e-3).all())  # per token: over channels


def test_keys_are_quantized_per_channel_so_an_outlier_channel_keeps_to_itself():
    torch.manual_seed(0)
    keys = torch.randn(1, 1, 64, 16)
    keys[..., 3] *= 1000  # one outlier channel, as real keys have
    error = (quantize(keys, 4, 64, per_channel=True).dequantize() - keys).abs()
    others = torch.cat([error[..., :3], error[..., 4:]], dim=-1)
    assert float(others.max()) < 0.5 and float(error[..., 3].max()) > 10


def test_values_are_quantized_per_token_so_a_large_token_keeps_to_itself():
    torch.manual_seed(0)
    values = torch.randn(1, 1, 64, 16)
    values[:, :, 7] *= 1000
    error = (quantize(values, 4, 16, per_channel=False).dequantize() - values).abs()
    others = torch.cat([error[:, :, :7], error[:, :, 8:]], dim=2)
    assert float(others.max()) < 0.5 and float(error[:, :, 7].max()) > 10


def test_padding_slots_do_not_widen_the_key_groups():
    torch.manual_seed(0)
    keys, mask = torch.randn(1, 1, 32, 8), torch.arange(32) < 20
    keys[:, :, 20:] = 1e4  # what padding slots may hold; attention never reads them
    error = (quantize(keys, 4, 32, per_channel=True, slot_mask=mask).dequantize() - keys)[:, :, :20].abs()
    assert float(error.max()) < 0.5


def test_quantized_bank_answers_as_its_dequantized_copy(model, doc, tokenizer):
    """int8 blocks stay quantized in the bank and are dequantized only when the reasoner reads them."""
    quantized = model.compress(doc, bank_dtype="int8")
    assert all(isinstance(quantized.block(i).values, QuantizedKV) for i in range(len(quantized)))
    dequantized = LycheeMemoryBank(
        [quantized.block(i).to("cpu", torch.float32) for i in range(len(quantized))], quantized.fingerprint
    )
    question = question_ids(tokenizer)
    assert torch.equal(
        model.generate(input_ids=question, bank=quantized), model.generate(input_ids=question, bank=dequantized)
    )


def test_smaller_formats_take_fewer_bytes_on_disk_as_estimated(model, exact, tmp_path):
    sizes = {}
    for bank_dtype in ("float32", "float16", "int8", "int4"):
        exact.save_pretrained(tmp_path / bank_dtype, bank_dtype=bank_dtype)
        sizes[bank_dtype] = (tmp_path / bank_dtype / "shard-00000.safetensors").stat().st_size
        tensor_bytes = len(exact) * bank_bytes_per_block(model, bank_dtype)
        assert tensor_bytes <= sizes[bank_dtype] < tensor_bytes + 4096  # plus the safetensors header
    assert sizes["float32"] > sizes["float16"] > sizes["int8"] > sizes["int4"]


def test_manifest_records_the_storage_format(exact, tmp_path):
    exact.save_pretrained(tmp_path, bank_dtype="int4")
    storage = json.loads((tmp_path / "bank.json").read_text())["storage"]
    assert storage["dtype"] == "int4"
    assert storage["keys"]["groups"] == "per_channel" and storage["values"]["groups"] == "per_token"
    assert storage["keys"]["bits"] == 4 and storage["values"]["group_size"] > 0


def test_default_format_is_float16_for_float32_models_else_the_model_dtype(exact, tmp_path):
    assert default_bank_dtype(torch.float32) == "float16" and default_bank_dtype(torch.bfloat16) == "bfloat16"
    exact.save_pretrained(tmp_path)
    assert LycheeMemoryBank.from_pretrained(tmp_path).bank_dtype == "float16"


def test_a_bank_from_another_model_is_refused_in_every_format(doc, tmp_path, tokenizer):
    tiny_lychee(seed=3).compress(doc).save_pretrained(tmp_path, bank_dtype="int4")
    with pytest.raises(MemoryBankError, match="weights_digest"):
        tiny_lychee().generate(input_ids=question_ids(tokenizer), bank=LycheeMemoryBank.from_pretrained(tmp_path))


def test_corrupted_quantized_block_is_refused(exact, tmp_path):
    exact.save_pretrained(tmp_path, bank_dtype="int4")
    path = tmp_path / "shard-00000.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    bank = LycheeMemoryBank.from_pretrained(tmp_path)
    with pytest.raises(MemoryBankError, match="corrupted"):
        bank.verify()


def test_values_beyond_float16_range_are_refused_naming_bfloat16(exact):
    block = exact.block(0)
    huge = type(block)(block.keys * 1e6, block.values, block.mask, block.span)
    with pytest.raises(MemoryBankError, match="bfloat16"):
        huge.astype("float16")


def test_unknown_bank_dtype_is_refused(model, doc):
    with pytest.raises(ValueError, match="int3.*float16"):
        model.compress(doc, bank_dtype="int3")


# --------------------------------------------------------------------------------------------- version 1
def write_version_1_bank(bank: LycheeMemoryBank, directory) -> None:
    """A bank as lychee-hf wrote it before format version 2: one file per block, model dtype, no `complete`, and
    a fingerprint from before the full weights digest."""
    import hashlib

    directory.mkdir(parents=True)
    records = []
    for index in range(len(bank)):
        block, name = bank.block(index), f"block-{index:06d}.safetensors"
        tensors = {"keys": block.keys, "values": block.values, "mask": block.mask.to(torch.uint8)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, directory / name)
        sha = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        records.append({"file": name, "span": list(block.span), "sha256": sha})
    manifest = {
        "format": "lychee-memory-bank",
        "version": 1,
        "fingerprint": {k: v for k, v in bank.fingerprint.items() if k != "weights_digest_version"},
        "block_shape": list(bank.block(0).keys.shape),
        "dtype": "float32",
        "num_tokens": bank.num_tokens,
        "blocks": records,
    }
    (directory / "bank.json").write_text(json.dumps(manifest))


def test_a_version_1_bank_still_loads_block_for_block(exact, tmp_path):
    write_version_1_bank(exact, tmp_path / "v1")
    old = LycheeMemoryBank.from_pretrained(tmp_path / "v1")
    assert old.spans == exact.spans and old.verify() == len(exact)
    for index in range(len(exact)):
        assert torch.equal(old.block(index).keys, exact.block(index).keys)
        assert torch.equal(old.block(index).values, exact.block(index).values)


def test_a_bank_with_the_old_five_tensor_digest_is_refused_asking_to_recompress(model, exact, tmp_path, tokenizer):
    write_version_1_bank(exact, tmp_path / "v1")
    with pytest.raises(MemoryBankError, match="older lychee-hf.*recompress"):
        model.generate(input_ids=question_ids(tokenizer), bank=LycheeMemoryBank.from_pretrained(tmp_path / "v1"))


def test_a_version_1_bank_cannot_grow_and_names_the_converter(model, exact, tmp_path, tokenizer):
    write_version_1_bank(exact, tmp_path / "v1")
    old = LycheeMemoryBank.from_pretrained(tmp_path / "v1")
    more = model.compress(document_ids(tokenizer, 40, seed=9))
    more.fingerprint = old.fingerprint  # the same old settings: what stops it is the format
    old.append(more)
    with pytest.raises(MemoryBankError, match="lychee-hf bank convert"):
        old.save_pretrained(tmp_path / "v1")


def test_bank_convert_rewrites_a_version_1_bank_as_int4_shards(model, exact, tmp_path, tokenizer, capsys):
    write_version_1_bank(exact, tmp_path / "v1")
    code = main(["bank", "convert", str(tmp_path / "v1"), str(tmp_path / "v2"), "--bank-dtype", "int4"])
    assert code == 0 and "int4" in capsys.readouterr().out
    converted = LycheeMemoryBank.from_pretrained(tmp_path / "v2")
    assert converted.bank_dtype == "int4" and converted.spans == exact.spans
    assert sorted(p.name for p in (tmp_path / "v2").iterdir()) == ["bank.json", "shard-00000.safetensors"]
    direct = exact.astype("int4")
    for index in range(len(exact)):
        assert torch.equal(converted.block(index).keys.codes, direct.block(index).keys.codes)


def test_bank_convert_refuses_a_non_empty_destination(exact, tmp_path, capsys):
    exact.save_pretrained(tmp_path / "src")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "mine.txt").write_text("keep")
    code = main(["bank", "convert", str(tmp_path / "src"), str(tmp_path / "dst"), "--bank-dtype", "int8"])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "dst" / "mine.txt").read_text() == "keep"


def test_compress_to_disk_writes_the_requested_format(model, doc, tmp_path):
    bank = compress_to_disk(model, doc, tmp_path, bank_dtype="int8")
    assert bank.bank_dtype == "int8" and isinstance(bank.block(0).keys, QuantizedKV)


@pytest.mark.parametrize("head_dim", [64, 80, 128, 6])
def test_the_rotation_is_orthogonal_for_any_head_dim(head_dim):
    matrix = rotation_matrix(head_dim, "hadamard")
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(head_dim), atol=1e-6, rtol=0)


def test_rotation_spreads_an_outlier_channel_so_per_token_codes_lose_less():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2, 2, 48, 64, generator=generator)
    values[..., 7] *= 25  # one outlier channel sets every per-token group's step
    plain = (quantize(values, 4, 64, per_channel=False).dequantize() - values).norm()
    rotated = (quantize(values, 4, 64, per_channel=False, rotation="hadamard").dequantize() - values).norm()
    assert rotated < 0.5 * plain


def test_a_rotated_bank_records_its_rotation_and_reads_back_in_the_model_basis(exact, tmp_path):
    exact.save_pretrained(tmp_path, bank_dtype="int4")
    storage = json.loads((tmp_path / "bank.json").read_text())["storage"]
    assert storage["values"]["rotation"] == "hadamard" and storage["keys"]["outliers"] == 8
    loaded = LycheeMemoryBank.from_pretrained(tmp_path)
    block, original = loaded.block(0), exact.block(0)
    real = original.mask
    error = (block.keys.dequantize() - original.keys)[:, :, real].norm() / original.keys[:, :, real].norm()
    assert float(error) < 0.1


def test_a_manifest_naming_an_unknown_rotation_is_refused(exact, tmp_path):
    exact.save_pretrained(tmp_path, bank_dtype="int4")
    manifest = json.loads((tmp_path / "bank.json").read_text())
    manifest["storage"]["values"]["rotation"] = "fourier"
    (tmp_path / "bank.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryBankError, match="storage.values.rotation 'fourier'"):
        LycheeMemoryBank.from_pretrained(tmp_path)


# Layouts benchmarks/bank_formats.py compares with int4 (there 16 of 64 key channels; the tiny head_dim is 16).
MIXED_INT4 = StorageFormat("int4", 128, 64, None, "hadamard", key_bits=8)  # int8 keys, int4's rotated values
MORE_OUTLIERS_INT4 = StorageFormat("int4", 128, 64, None, "hadamard", key_outliers=4)


@pytest.mark.parametrize("storage", [MIXED_INT4, MORE_OUTLIERS_INT4], ids=["int8-keys", "more-outliers"])
def test_an_int4_variant_records_its_layout_per_part_and_loads_back_as_it(exact, storage, tmp_path):
    exact.save_pretrained(tmp_path / "bank", bank_dtype=storage)
    recorded = json.loads((tmp_path / "bank" / "bank.json").read_text())["storage"]
    assert recorded["keys"]["bits"] == (storage.key_bits or 4) and recorded["values"]["bits"] == 4
    assert recorded["keys"].get("outliers", 0) == storage.key_outliers
    loaded = LycheeMemoryBank.from_pretrained(tmp_path / "bank")
    assert loaded.bank_dtype == "int4" and loaded.verify() == len(exact)
    block, original = loaded.block(0), exact.block(0)
    assert block.keys.bits == (storage.key_bits or 4) and block.values.bits == 4
    assert block.keys.outliers == storage.key_outliers
    real = original.mask
    error = (block.keys.dequantize() - original.keys)[:, :, real].norm() / original.keys[:, :, real].norm()
    assert float(error) < 0.1
    loaded.save_pretrained(tmp_path / "copy")  # copied in its own layout, not quantized again
    copy = LycheeMemoryBank.from_pretrained(tmp_path / "copy")
    assert torch.equal(copy.block(0).keys.codes, block.keys.codes)
    assert torch.equal(copy.block(0).values.codes, block.values.codes)


def test_int8_keys_lose_less_than_int4_keys_in_a_saved_bank(exact, tmp_path):
    errors = {}
    for name, storage in (("int8", MIXED_INT4), ("int4", StorageFormat.for_dtype("int4"))):
        exact.save_pretrained(tmp_path / name, bank_dtype=storage)
        keys = LycheeMemoryBank.from_pretrained(tmp_path / name).block(0).keys.dequantize()
        errors[name] = float((keys - exact.block(0).keys)[:, :, exact.block(0).mask].norm())
    assert errors["int8"] < 0.25 * errors["int4"]


@pytest.mark.parametrize("part, bits", [("keys", 3), ("values", 8)])
def test_a_manifest_naming_bits_the_layout_cannot_have_is_refused(exact, part, bits, tmp_path):
    # Keys may differ from the dtype's bits (a mixed layout); values are what the dtype names.
    exact.save_pretrained(tmp_path, bank_dtype="int4")
    manifest = json.loads((tmp_path / "bank.json").read_text())
    manifest["storage"][part]["bits"] = bits
    (tmp_path / "bank.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryBankError, match=f"storage.{part}.bits {bits}"):
        LycheeMemoryBank.from_pretrained(tmp_path)


def test_outlier_key_channels_are_kept_exactly_and_left_out_of_the_codes():
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 2, 40, 16, generator=generator)
    keys[..., 5] *= 50  # an outlier channel
    stored = quantize(keys, 4, 128, per_channel=True, outliers=2)
    assert stored.has_consistent_shapes() and stored.codes.shape[2] == 14  # 16 channels, 2 kept in float16
    assert bool((stored.outlier_index == 5).any(-1).all())  # the outlier channel is kept in every head
    restored = stored.dequantize()
    torch.testing.assert_close(restored[..., 5], keys[..., 5].half().float())
    plain = quantize(keys, 4, 128, per_channel=True)
    assert (restored - keys).norm() < (plain.dequantize() - keys).norm()


def test_an_int4_bank_stores_what_kv_nbytes_estimates(exact, model, tmp_path):
    from lychee_hf.bank_tools import bank_block_shape
    from lychee_hf.modeling.kv_quant_lychee import kv_nbytes

    block = exact.block(0).astype("int4")
    assert block.keys.nbytes() + block.values.nbytes() == kv_nbytes(bank_block_shape(model), "int4")
