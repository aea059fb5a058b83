import pytest

from lychee_hf import LycheeMemoryConfig

TINY_LLAMA = {"model_type": "llama", "vocab_size": 100, "max_position_embeddings": 8192}


def make(**knobs):
    return LycheeMemoryConfig(text_config=dict(TINY_LLAMA), **knobs)


def test_authors_defaults_give_1024_slots_per_4096_chunk():
    config = LycheeMemoryConfig()
    assert (config.chunk_size, config.compression_window, config.compression_ratio) == (4096, 2048, 4)
    assert config.memory_budget == 1024
    assert config.slots_per_block == 1024
    assert config.model_type == "lychee_memory"


def test_chunk_size_not_multiple_of_window_names_the_fix():
    with pytest.raises(
        ValueError, match="chunk_size 3000 is not a multiple of compression_window 2048: use 2048 or 4096"
    ):
        make(chunk_size=3000)


def test_window_not_multiple_of_ratio_names_the_fix():
    with pytest.raises(
        ValueError, match="compression_window 2050 is not a multiple of compression_ratio 4: use 2048 or 2052"
    ):
        make(chunk_size=4100, compression_window=2050)


def test_memory_budget_beyond_backbone_positions_is_refused():
    with pytest.raises(ValueError, match="lower memory_budget or chunk_size"):
        make(memory_budget=4000)


def test_compression_beyond_backbone_positions_is_refused():
    with pytest.raises(ValueError, match="beyond the backbone's max_position_embeddings"):
        LycheeMemoryConfig(text_config=dict(TINY_LLAMA, max_position_embeddings=2048), memory_budget=8)


@pytest.mark.parametrize(
    "knob, value",
    [
        ("compression_mode", "zip"),
        ("position_scheme", "random"),
        ("memory_token_placement", "middle"),
        ("gate_type", "x"),
    ],
)
def test_unknown_choice_is_refused(knob, value):
    with pytest.raises(ValueError, match=knob):
        make(**{knob: value})


def test_gate_threshold_must_be_a_probability():
    with pytest.raises(ValueError, match="gate_threshold"):
        make(gate_threshold=1.5)


def test_unsupported_backbone_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        LycheeMemoryConfig(text_config={"model_type": "gpt2"})


def test_template_ids_outside_vocab_are_refused():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        make(update_template_ids=[[1], [2], [500]])


def test_template_needs_three_pieces():
    with pytest.raises(ValueError, match="3 pieces"):
        make(final_template_ids=[[1], [2]])


def test_lossless_mode_keeps_every_token_and_ignores_window_multiples():
    config = make(compression_mode="lossless", chunk_size=300, compression_window=2048)
    assert config.slots_per_block == 300


def test_config_round_trips_through_dict():
    config = make(chunk_size=64, compression_window=32, memory_budget=16, update_template_ids=[[1], [2], [3]])
    again = LycheeMemoryConfig.from_dict(config.to_dict())
    assert again.chunk_size == 64 and again.update_template_ids == [[1], [2], [3]]
    assert again.text_config.model_type == "llama"
