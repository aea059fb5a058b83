"""LycheeGate: decides, per block, whether the reasoner should read it.

`generate` asks the gate for the probability that each *remaining* block is related to the question given the
current working memory, and asks again only after the memory changed. A trained gate (a LoRA adapter on the
shared backbone plus a small head) overrides `score_blocks` and keeps this interface, so `generate` never
changes with the gate.
"""

import torch
from torch import nn

from .compressor_lychee import LycheePreTrainedModel
from .configuration_lychee import LycheeMemoryConfig
from .memory_bank_lychee import LycheeMemoryBank


class LycheeGate(LycheePreTrainedModel):
    """The default gate, `gate_type="always_related"`: every block is related (P = 1), as in the authors' release."""

    def __init__(self, config: LycheeMemoryConfig):
        super().__init__(config)
        self.post_init()

    def score_blocks(
        self,
        backbone: nn.Module,
        bank: LycheeMemoryBank,
        start: int,
        question_ids: torch.LongTensor,
        memory_ids: torch.LongTensor,
    ) -> torch.Tensor:
        """Scores blocks of one document against one question and working memory.

        Args:
            backbone (`nn.Module`): the shared base decoder, for gates that read the block's K/V.
            bank (`LycheeMemoryBank`): the document; read blocks with `bank.block(i)` (a disk bank streams them).
            start (`int`): the first block to score; blocks `start .. len(bank) - 1` are still ahead.
            question_ids (`torch.LongTensor`): (L_q,) the question, without padding.
            memory_ids (`torch.LongTensor`): (L_m,) the current working memory.

        Returns:
            `torch.Tensor`: (len(bank) - start,) probabilities in [0, 1] that each block ahead is related.
        """
        return torch.ones(len(bank) - start)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.score_blocks(*args, **kwargs)
