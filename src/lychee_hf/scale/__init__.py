"""Scale-out on accelerate: compress a corpus (`corpus.py`), answer many questions over many banks
(`questions.py`), and the shared process helpers (`distributed.py`). Everything runs unchanged in one process,
under `accelerate launch` (GPUs, nodes) and under `torchrun`."""

from .corpus import CorpusSummary, compress_corpus, read_corpus, read_corpus_manifest
from .distributed import distributed_state, place_model

__all__ = [
    "CorpusSummary",
    "compress_corpus",
    "distributed_state",
    "place_model",
    "read_corpus",
    "read_corpus_manifest",
]
