"""LycheeMemory model classes: the Hub remote code, also installed as `lychee_hf.modeling` (one copy).

This file is the modeling code's public surface. The model classes come first; then the building blocks the
`lychee_hf` library (training, bank tools, evaluation, scale-out) uses. Everything else in the `*_lychee.py`
files is private to the remote code and may change in any release: `lychee_hf` imports only what is listed here
(a test checks it).
"""

from .adapters_lychee import (
    ADAPTER_WEIGHTS_FILE,
    BACKBONE_LORA_TARGETS,
    ROLES,
    adapter_names,
    add_role_adapter,
    load_role_adapter,
    role_adapter,
    save_role_adapter,
)
from .bank_manifest_lychee import (
    BANK_FILE_PATTERN,
    DEFAULT_MAX_SHARD_BYTES,
    MANIFEST_NAME,
    MemoryBankError,
    StorageFormat,
    start_bank,
)
from .bank_text_lychee import DocumentText, DocumentTextError, chunk_char_spans
from .compressor_lychee import LycheeCompressor, positions_from_mask
from .configuration_lychee import LycheeMemoryConfig, backbone_head_dim
from .evidence_lychee import Evidence
from .extract_lychee import answer_candidates, candidate_log_probs
from .fingerprint_lychee import weights_digest
from .first_stage_lychee import LexicalIndex
from .gate_lychee import GATE_CLASSES, GatePolicy, LycheeGate, gate_prompt
from .kv_quant_lychee import BANK_DTYPES, QuantizedKV, check_bank_dtype, default_bank_dtype, kv_nbytes, kv_nbytes_of
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock, chunk_spans
from .modeling_lychee import LycheeMemoryForCausalLM
from .pretrained_lychee import LycheePreTrainedModel
from .prompts_lychee import build_prompt, clean_memory, count_decoded, left_pad, memory_update_config, stop_and_pad_ids
from .reasoner_lychee import wants_progress
from .templates_lychee import template_config_ids
from .trace_lychee import LycheeBlockTrace, LycheeGenerateOutput, LycheeTrace

__all__ = [
    # the model, its config and its parts
    "LycheeCompressor",
    "LycheeGate",
    "LycheeMemoryConfig",
    "LycheeMemoryForCausalLM",
    "LycheePreTrainedModel",
    # what generate returns
    "Evidence",
    "LycheeBlockTrace",
    "LycheeGenerateOutput",
    "LycheeTrace",
    # the memory bank and its storage
    "BANK_DTYPES",
    "BANK_FILE_PATTERN",
    "DEFAULT_MAX_SHARD_BYTES",
    "LycheeMemoryBank",
    "LycheeMemoryBlock",
    "MANIFEST_NAME",
    "MemoryBankError",
    "QuantizedKV",
    "StorageFormat",
    "DocumentText",
    "DocumentTextError",
    "check_bank_dtype",
    "chunk_char_spans",
    "chunk_spans",
    "default_bank_dtype",
    "kv_nbytes",
    "kv_nbytes_of",
    "start_bank",
    # the first stage's index over a bank's text
    "LexicalIndex",
    # role adapters (PEFT's own layout)
    "ADAPTER_WEIGHTS_FILE",
    "BACKBONE_LORA_TARGETS",
    "ROLES",
    "adapter_names",
    "add_role_adapter",
    "load_role_adapter",
    "role_adapter",
    "save_role_adapter",
    # prompts, gate and decoding pieces the trainers reuse
    "GATE_CLASSES",
    "GatePolicy",
    "backbone_head_dim",
    "build_prompt",
    "clean_memory",
    "count_decoded",
    "gate_prompt",
    "left_pad",
    "memory_update_config",
    "positions_from_mask",
    "stop_and_pad_ids",
    "template_config_ids",
    "wants_progress",
    "weights_digest",
    # the extractive answer's candidates and scores (the span-choice trainer reuses them)
    "answer_candidates",
    "candidate_log_probs",
]
