import pytest
import torch

from lychee_hf.testing import tiny_tokenizer


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()
