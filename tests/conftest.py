import pytest
import torch

from lychee_hf.testing import document_ids, save_tiny_checkpoint, tiny_lychee, tiny_tokenizer


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model():
    """A tiny LycheeMemory model, one per test module (tests may change its settings)."""
    return tiny_lychee()


@pytest.fixture(scope="module")
def doc(tokenizer):
    """(1, 150) random document ids: three 64-token blocks of the tiny model, the last one partial."""
    return document_ids(tokenizer, 150)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint folder (model + tokenizer) that the CLI loads, one per test module."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
