"""bitsandbytes 4-bit / 8-bit loading: the backbone is quantized, the compressor and lm_head are not.

bitsandbytes runs both on CPU (tiny models here); answers of random tiny models may change under quantization,
so agreement with the float32 model is recorded (a test property in `--junitxml` reports), never asserted.
"""

import pytest
import torch
from torch import nn
from transformers import BitsAndBytesConfig

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.modeling.attention_lychee import LowRankDelta, backbone_projection
from lychee_hf.modeling.memory_bank_lychee import MemoryBankError
from lychee_hf.testing import document_ids, question_ids, tiny_lychee

bnb = pytest.importorskip("bitsandbytes")

# bitsandbytes' CPU int8 matmul warns on every call that it computes in float16.
pytestmark = pytest.mark.filterwarnings("ignore:MatMul8bitLt")

CONFIGS = {
    "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    "8bit": BitsAndBytesConfig(load_in_8bit=True),
}
QUANTIZED_CLASS = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}


@pytest.fixture(scope="module", params=[("llama", None), ("qwen2", 4)], ids=["llama-full", "qwen2-lowrank"])
def saved(request, tmp_path_factory):
    """(path, fp32 model): a tiny model saved once per backbone kind (Qwen2: biased q/k/v, low-rank deltas)."""
    kind, rank = request.param
    model = tiny_lychee(kind, memory_projection_rank=rank)
    path = tmp_path_factory.mktemp(kind)
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_load_converts_the_backbone_and_keeps_compressor_and_lm_head(bits, saved):
    path, _ = saved
    model = LycheeMemoryForCausalLM.from_pretrained(path, quantization_config=CONFIGS[bits])
    backbone_linears = [m for n, m in model.model.named_modules() if n.endswith(("_proj", "o_proj"))]
    assert backbone_linears and all(isinstance(m, QUANTIZED_CLASS[bits]) for m in backbone_linears)
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32
    assert type(model.compressor.memory_embedding) is nn.Embedding
    for projections in model.compressor.layers:
        for own in (projections.q_proj, projections.k_proj, projections.v_proj):
            assert type(own) in (nn.Linear, LowRankDelta)
            assert all(p.dtype == torch.float32 for p in own.parameters())


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_model_answers_over_a_context(bits, saved, tokenizer, request):
    path, fp32 = saved
    model = LycheeMemoryForCausalLM.from_pretrained(path, quantization_config=CONFIGS[bits])
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    out = model.generate(input_ids=question, context_ids=doc, return_dict_in_generate=True)
    answer = out.sequences[0, question.shape[1] :]
    assert torch.equal(out.sequences[:, : question.shape[1]], question)
    assert 0 < answer.numel() <= model.config.max_answer_tokens
    assert len(out.trace[0]) == 3 and all(0 < len(r.memory_ids) <= model.config.memory_budget for r in out.trace[0])
    reference = fp32.generate(input_ids=question, context_ids=doc)[0, question.shape[1] :]
    shared = min(answer.numel(), reference.numel())
    agreement = float((answer[:shared] == reference[:shared]).float().mean()) if shared else 0.0
    request.node.user_properties.append(("answer_token_agreement_with_fp32", agreement))


def test_bank_of_the_float_model_is_refused_by_its_quantized_load(saved, tokenizer):
    path, fp32 = saved
    bank = fp32.compress(document_ids(tokenizer, 100))
    model = LycheeMemoryForCausalLM.from_pretrained(path, quantization_config=CONFIGS["4bit"])
    with pytest.raises(MemoryBankError, match="weights_digest"):
        model.generate(input_ids=question_ids(tokenizer), bank=bank)


def test_float16_load_keeps_the_compressor_in_float32_and_answers(saved, tokenizer):
    # The quantizers' skip list is `_keep_in_fp32_modules`, which transformers also applies to float16 loads.
    path, _ = saved
    model = LycheeMemoryForCausalLM.from_pretrained(path, dtype=torch.float16)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in model.compressor.parameters())
    bank = model.compress(document_ids(tokenizer, 100))
    assert bank.block(0).keys.dtype == torch.float16
    out = model.generate(input_ids=question_ids(tokenizer), bank=bank)
    assert out.shape[1] > question_ids(tokenizer).shape[1]


def _quantized_linear(bits: str, in_features: int = 64, out_features: int = 32) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)
    plain = nn.Linear(in_features, out_features, bias=True)
    if bits == "4bit":
        quantized = bnb.nn.Linear4bit(in_features, out_features, bias=True, compute_dtype=torch.float32)
        quantized.load_state_dict(plain.state_dict())
        return quantized.to("cpu"), plain
    quantized = bnb.nn.Linear8bitLt(in_features, out_features, bias=True, has_fp16_weights=False)
    quantized.load_state_dict(plain.state_dict())
    return quantized.to("cpu"), plain


def test_backbone_projection_of_a_plain_linear_is_its_bias_free_matmul():
    base = nn.Linear(64, 32)
    x = torch.randn(2, 5, 64)
    assert torch.equal(backbone_projection(base, x), nn.functional.linear(x, base.weight))


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_backbone_projection_of_a_quantized_linear_is_its_output_without_bias(bits):
    quantized, plain = _quantized_linear(bits)
    x = torch.randn(2, 5, 64)
    projected = backbone_projection(quantized, x)
    torch.testing.assert_close(projected, quantized(x) - quantized.bias.to(projected.dtype))
    # Quantization error only: near the unquantized matmul (NF4 of a uniform init: ~10 % relative error).
    reference = nn.functional.linear(x, plain.weight)
    assert torch.linalg.vector_norm(projected - reference) < 0.25 * torch.linalg.vector_norm(reference)


def test_backbone_projection_of_a_lora_wrapped_linear_includes_the_adapter():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    lora = wrapped.base_model.model[0]
    x = torch.randn(2, 5, 64)
    expected = lora(x) - lora.base_layer.bias
    assert not torch.allclose(expected, nn.functional.linear(x, lora.base_layer.weight))  # the adapter counts
    torch.testing.assert_close(backbone_projection(lora, x), expected)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_role_adapters_load_in_full_precision_on_a_quantized_backbone(bits, tmp_path, tokenizer):
    peft = pytest.importorskip("peft")
    from lychee_hf.modeling.adapters_lychee import BACKBONE_LORA_TARGETS, adapter_names

    model = tiny_lychee(gate_type="classifier")
    for role in ("gate", "reasoner"):
        model.add_role_adapter(peft.LoraConfig(r=4, target_modules=BACKBONE_LORA_TARGETS), role)
    model.save_pretrained(tmp_path)
    loaded = LycheeMemoryForCausalLM.from_pretrained(tmp_path, quantization_config=CONFIGS[bits])
    assert adapter_names(loaded) == ["gate", "reasoner"]
    lora = [p for n, p in loaded.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    out = loaded.generate(
        input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 150), return_dict_in_generate=True
    )
    assert all(0.0 <= r.gate_score <= 1.0 for r in out.trace[0]) and len(out.trace[0]) == 3
