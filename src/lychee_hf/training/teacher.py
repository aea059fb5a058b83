"""The gold-fact teacher: what a perfect reasoner's working memory would hold after each block.

For an example whose supporting passages are located (`QAExample.supporting`), the memory after block i is
the text of every supporting passage that ends in block i or earlier, in document order. The gate trainer shows
the gate the memory *before* each block; reasoner fine-tuning uses the memory after each block as the target of
that block's memory update.
"""

import dataclasses

from ..data import QAExample, supporting_chunks


def gold_memory_texts(example: QAExample, tokenizer, chunk_size: int, num_blocks: int) -> list[str]:
    """The teacher memory after each of `num_blocks` blocks ("" until the first supporting passage ends).

    Args:
        example (`QAExample`): the example with `supporting` character spans.
        tokenizer: the tokenizer that cut the document into `chunk_size`-token blocks.
        chunk_size (`int`): tokens per block.
        num_blocks (`int`): blocks of the document.

    Returns:
        `list[str]`: `num_blocks` memories, the supporting passages seen so far joined by spaces.
    """
    ends = sorted(
        (max(supporting_chunks(dataclasses.replace(example, supporting=[span]), tokenizer, chunk_size)), span)
        for span in example.supporting
        if span[1] > span[0]
    )
    return [
        " ".join(example.context[start:end] for last_chunk, (start, end) in ends if last_chunk <= index)
        for index in range(num_blocks)
    ]
