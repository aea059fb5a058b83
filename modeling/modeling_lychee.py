"""LycheeMemoryForCausalLM: one backbone shared by the compressor, the gate and the reasoner.

`generate(input_ids=question_ids, context_ids=document_ids)` chunks the document, compresses each chunk into a
K/V block, lets the gate skip blocks, lets the reasoner rewrite a working memory block by block, and answers
from question + memory. Without `context_ids` (or `memory`) it is the plain backbone.
"""

import copy
import os
import time
import warnings

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging

from .adapters_lychee import (
    activate_role_adapter,
    adapter_names,
    add_role_adapter,
    base_state_dict,
    check_adapter_names,
    checkpoint_context_fn,
    load_role_adapter,
    role_adapter,
    save_role_adapter,
)
from .attention_lychee import LEGACY_KEY_MAPPING, install_lychee_attention
from .bank_writer_lychee import bank_writers
from .compat_lychee import cache_kwargs, output_cache, pop_cache
from .compressor_lychee import LycheeCompressor
from .configuration_lychee import ANSWER_SOURCES, SUPPORTED_BACKBONES, LycheeMemoryConfig, backbone_head_dim
from .fingerprint_lychee import WEIGHTS_DIGEST_VERSION, weights_digest
from .first_stage_lychee import FIRST_STAGE_KWARGS, FirstStage
from .gate_lychee import GATE_CLASSES, GATE_POLICY_KWARGS, GatePolicy
from .kv_quant_lychee import check_bank_dtype
from .loading_lychee import HUB_KWARGS, check_checkpoint_config, check_loading_info
from .memory_bank_lychee import LycheeMemoryBank, LycheeMemoryBlock, chunk_spans
from .prefix_lychee import block_prefix
from .pretrained_lychee import LycheePreTrainedModel
from .prompts_lychee import id_list, memory_update_config, stop_and_pad_ids
from .reasoner_lychee import ReasonerLoop, wants_progress
from .templates_lychee import (
    FINAL_ANSWER_TEMPLATE,
    INITIAL_MEMORY,
    MEMORY_UPDATE_TEMPLATE,
    gate_label_ids,
    gate_template_ids,
    template_config_ids,
)
from .trace_lychee import LycheeGenerateOutput
from .validation_lychee import check_banks, check_context, check_prompt_lengths, check_questions, unpadded_rows


def generation_config_for(backbone: nn.Module, tokenizer) -> GenerationConfig:
    """The backbone's generation config with eos = every stop id the tokenizer or backbone knows, and a pad id."""
    config = copy.deepcopy(backbone.generation_config) if backbone.generation_config else GenerationConfig()
    eos = id_list(config.eos_token_id)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.insert(0, tokenizer.eos_token_id)
    config.eos_token_id = eos[0] if len(eos) == 1 else eos
    if config.pad_token_id is None:
        config.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None)
        )
    return config


class LycheeMemoryForCausalLM(LycheePreTrainedModel, GenerationMixin):
    """The LycheeMemory model: backbone (reasoner) + `compressor` + `gate`, one backbone in memory."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _no_split_modules = ["LlamaDecoderLayer", "Qwen2DecoderLayer", "MistralDecoderLayer"]
    # --- quantization (bitsandbytes & co.): never quantize the compressor (memory embedding + projections).
    # Quantizers skip these modules; lm_head is skipped by transformers' default (output embeddings). The same
    # list upcasts these weights to float32 in float16 loads, which the compressor handles. Anchored, because
    # the float16 dtype plan searches these patterns anywhere in a weight's name.
    _keep_in_fp32_modules = [r"^compressor\."]
    # --- end quantization

    def __init__(self, config: LycheeMemoryConfig):
        # Keyword overrides (`from_pretrained(path, compression_ratio=5)`) are set after the config's own check.
        config.validate()
        super().__init__(config)
        self.model = AutoModel.from_config(config.text_config)
        install_lychee_attention(self.model)
        self.vocab_size = config.text_config.vocab_size
        self.lm_head = nn.Linear(config.text_config.hidden_size, self.vocab_size, bias=False)
        self.compressor = LycheeCompressor(config)
        self.gate = GATE_CLASSES[config.gate_type](config)
        self.post_init()

    # ----------------------------------------------------------------------------------------- backbone
    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        memory_blocks: list[LycheeMemoryBlock] | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """The backbone causal LM (the reasoner): what `generate` decodes with; the training entry point.

        Args:
            cache (`Cache`, *optional*): the K/V cache (transformers 5.24's name; `past_key_values=` is accepted
                too, as transformers 5.23 and earlier pass it).
            memory_blocks (`list[LycheeMemoryBlock]`, *optional*): one block per row, read as attention prefix
                (placed by `config.position_scheme`, as in `generate`'s memory updates). `input_ids`,
                `attention_mask` (left padding) and `labels` then cover the prompt only; `position_ids` and
                the cache are derived from the blocks. This is how a reasoner or gate adapter trains on what it
                reads in `generate`.
            Other arguments as for the backbone's `…ForCausalLM.forward`.
        """
        cache = pop_cache(kwargs, cache)
        if memory_blocks is not None:
            attention_mask, position_ids, cache, kwargs["block_states"] = self._block_prefix_inputs(
                memory_blocks, input_ids if input_ids is not None else inputs_embeds, attention_mask, cache
            )
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **cache_kwargs(cache),
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **cache_kwargs(output_cache(outputs)))

    def _block_prefix_inputs(self, blocks, inputs, attention_mask, cache):
        if cache is not None:
            raise ValueError("Pass either memory_blocks or a cache, not both.")
        if len(blocks) != inputs.shape[0]:
            raise ValueError(f"Got {len(blocks)} memory_blocks for {inputs.shape[0]} rows: pass one block per row.")
        prefix = block_prefix(self, blocks)
        if attention_mask is None:
            attention_mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=self.device)
        inputs = prefix.forward_inputs(attention_mask.to(self.device))
        # The cache carries the block (and sizes the causal mask); under gradient checkpointing in training,
        # transformers' layers drop it, and they read the same K/V from `block_states` instead.
        return inputs["attention_mask"], inputs["position_ids"], prefix.cache, prefix.block_states()

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, *args, **kwargs):
        """`PreTrainedModel.activation_checkpointing_enable`, made safe for role adapters and block prefixes.

        Always non-reentrant: block prefixes reach the layers as arguments (`block_states`), which reentrant
        checkpointing would not differentiate. Recomputation runs with the adapters active in its forward pass
        (`checkpoint_context_fn`), so a compression pass is recomputed as the compressor, not as the reasoner.
        """
        options = dict(activation_checkpointing_kwargs or {})
        if options.get("use_reentrant"):
            raise ValueError(
                "LycheeMemory checkpoints without reentrancy (the block prefix is a layer argument that reentrant "
                "checkpointing does not differentiate): drop use_reentrant=True."
            )
        options["use_reentrant"] = False
        options.setdefault("context_fn", checkpoint_context_fn(self))
        return super().activation_checkpointing_enable(options, *args, **kwargs)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_backbone(
        cls,
        model_or_path: nn.Module | str | os.PathLike,
        tokenizer=None,
        memory_update_template: str = MEMORY_UPDATE_TEMPLATE,
        final_answer_template: str = FINAL_ANSWER_TEMPLATE,
        initial_memory: str = INITIAL_MEMORY,
        gate_template: str | None = None,
        **knobs,
    ) -> "LycheeMemoryForCausalLM":
        """Builds a LycheeMemory model around a stock Llama/Qwen2/Mistral causal LM.

        The memory-token embedding starts as the eos embedding and the memory q/k/v projections as copies of the
        backbone's (what the authors' loader does when they are absent); the templates are tokenized piecewise
        from the tokenizer's chat template. The given backbone is copied, never modified.

        Args:
            model_or_path (`PreTrainedModel` or `str`): a causal LM, or a local path / Hub id to load one from.
            tokenizer (`PreTrainedTokenizerBase` or `str`, *optional*): the backbone's tokenizer (loaded from
                `model_or_path` when it is a path).
            memory_update_template / final_answer_template (`str`): prompts with `{prompt}` then `{memory}`.
            initial_memory (`str`): the working memory before the first block.
            gate_template (`str`, *optional*): the gate's prompt after a block: with `{prompt}` for the
                query-likelihood gate, with `{prompt}` then `{memory}` for the classifier gate (default: the
                built-in one for `gate_type`).
            **knobs: any `LycheeMemoryConfig` field (`chunk_size`, `compression_ratio`, `memory_budget`, ...).

        Returns:
            `LycheeMemoryForCausalLM`, in the backbone's dtype and on the backbone's device.
        """
        if isinstance(model_or_path, (str, os.PathLike)):
            tokenizer = tokenizer if tokenizer is not None else model_or_path
            model_or_path = AutoModelForCausalLM.from_pretrained(model_or_path)
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        backbone = model_or_path
        if tokenizer is None:
            raise ValueError(
                "from_backbone needs the backbone's tokenizer to build the prompt templates: pass tokenizer=..."
            )
        if (
            getattr(backbone.config, "model_type", None) not in SUPPORTED_BACKBONES
            or backbone.get_output_embeddings() is None
        ):
            raise ValueError(
                f"from_backbone needs a causal LM (…ForCausalLM) of type {SUPPORTED_BACKBONES}, got "
                f"{type(backbone).__name__}."
            )
        generation_config = generation_config_for(backbone, tokenizer)
        eos_ids, _ = stop_and_pad_ids(generation_config)
        if not eos_ids:
            raise ValueError("The tokenizer and backbone define no eos token: memory updates could never stop.")
        text_config = copy.deepcopy(backbone.config)
        text_config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
        templates = template_config_ids(
            tokenizer,
            memory_update_template,
            final_answer_template,
            initial_memory,
            gate_template,
            knobs.get("gate_type", "always_related"),
        )
        config = LycheeMemoryConfig(text_config=text_config, **templates, **knobs)
        config._attn_implementation = backbone.config._attn_implementation
        model = cls(config).to(device=backbone.device, dtype=backbone.dtype)
        base = getattr(backbone, backbone.base_model_prefix)
        model.model.load_state_dict(base.state_dict())
        model.lm_head.load_state_dict(backbone.get_output_embeddings().state_dict())
        model.compressor.initialize_from_backbone(model.model, eos_ids[0])
        model.generation_config = generation_config
        model.eval()
        return model

    def set_gate(self, gate_type: str, tokenizer=None, gate_template: str | None = None) -> None:
        """Switches the gate (`"always_related"`, `"query_likelihood"` or `"classifier"`) and its prompt.

        Args:
            gate_type (`str`): the gate to use from now on (written to `config.gate_type`).
            tokenizer (`PreTrainedTokenizerBase`, *optional*): the backbone's tokenizer, needed to tokenize the
                new gate's prompt and answer tokens unless the config already holds them in the right form.
            gate_template (`str`, *optional*): a custom gate prompt (see `from_backbone`).
        """
        config = copy.deepcopy(self.config)
        config.gate_type = gate_type
        if tokenizer is not None:
            config.gate_template_ids = gate_template_ids(tokenizer, gate_type, gate_template)
            config.gate_label_ids = gate_label_ids(tokenizer)
        elif gate_template is not None:
            raise ValueError("set_gate needs the tokenizer to tokenize gate_template: pass tokenizer=...")
        try:
            config.validate()
        except ValueError as error:
            raise ValueError(f"{error} (set_gate: pass the tokenizer to rebuild the gate prompt)") from None
        self.config = config
        self.gate = GATE_CLASSES[gate_type](config)

    # ----------------------------------------------------------------------------------------- role adapters
    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus every role adapter in PEFT's layout.

        The folder gets the backbone and compressor weights without any adapter (as the model is with adapters
        off) and, per role adapter, `<save_directory>/<role>/adapter_config.json` + `adapter_model.safetensors`
        (what `PeftModel.save_pretrained` writes for a named adapter); `config.role_adapters` lists them, and
        `from_pretrained` loads them back.
        """
        roles = adapter_names(self)
        self.config.role_adapters = roles or None
        # Always today's weight names: a checkpoint loaded through `LEGACY_KEY_MAPPING` is not written back in its
        # old names (transformers' `save_original_format` would revert the renaming).
        kwargs.setdefault("save_original_format", False)
        if not roles:
            return super().save_pretrained(save_directory, *args, **kwargs)
        check_adapter_names(self)
        if kwargs.get("push_to_hub"):
            raise ValueError(
                "A model with role adapters is pushed with model.push_to_hub(repo_id) or `lychee-hf push`."
            )
        kwargs.setdefault("state_dict", base_state_dict(self))
        # Adapters added through transformers' integration (`model.add_adapter` / `load_adapter`, where the
        # installed transformers allows them) set this flag, and `PreTrainedModel.save_pretrained` then writes only
        # the active adapter (its documented `save_peft_format` behaviour): the backbone must be saved here too.
        # lychee-hf's own adapter functions never set it.
        had_adapters = getattr(self, "_hf_peft_config_loaded", False)
        self._hf_peft_config_loaded = False
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self._hf_peft_config_loaded = had_adapters
        for role in roles:
            save_role_adapter(self, role, os.path.join(save_directory, role))

    def add_role_adapter(self, peft_config, role: str) -> None:
        """Adds a new trainable adapter for `role` (`"compressor"`, `"gate"` or `"reasoner"`).

        Through peft's own API, so it works whatever minimum peft transformers' integration (`add_adapter`) asks.

        Args:
            peft_config (`peft.PeftConfig`): e.g. `LoraConfig(r=16, target_modules=BACKBONE_LORA_TARGETS)`.
            role (`str`): the adapter's name, which is its role.
        """
        add_role_adapter(self, peft_config, role)

    def load_role_adapter(self, source: str | os.PathLike, role: str, **hub_kwargs) -> None:
        """Loads a saved role adapter (frozen): `source/<role>/adapter_config.json` + `adapter_model.safetensors`.

        Args:
            source (`str` or `os.PathLike`): a folder or Hub repo holding the adapter in subfolder `role` (what
                `save_pretrained` or `PeftModel.save_pretrained` of a named adapter writes).
            role (`str`): which role's adapter to load.
            **hub_kwargs: `revision`, `token`, `cache_dir`, ... for a Hub repo.
        """
        load_role_adapter(self, source, role, **hub_kwargs)

    def activate_role_adapter(self, role: str | None) -> None:
        """Runs as `role` outside `generate` (a plain forward, chat, training): only its adapter on; `None`: none.

        `generate` switches adapters per phase by itself and restores this choice afterwards.
        """
        activate_role_adapter(self, role)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *args,
        load_role_adapters: bool = True,
        allow_missing_weights: bool = False,
        **kwargs,
    ):
        """`PreTrainedModel.from_pretrained`, checked, then the role adapters the checkpoint lists.

        A folder or repo that is not a LycheeMemory checkpoint is refused before anything is built, and so is a
        checkpoint whose weights do not match its config (missing, unexpected or mis-shaped tensors): such a model
        would answer with random weights. Low-rank memory projections saved under their former names
        (`lora_A` / `lora_B`) load through transformers' `key_mapping` (`LEGACY_KEY_MAPPING`). Keyword overrides of
        the config (`compression_ratio=2`, ...) go through the config's own validation.

        Args:
            load_role_adapters (`bool`, *optional*, defaults to `True`): `False` loads the bare backbone and
                compressor, e.g. to train new adapters from scratch.
            allow_missing_weights (`bool`, *optional*, defaults to `False`): load even when weights are missing
                or unexpected (transformers' load report lists them; missing ones are randomly initialised).
            Other arguments as for `PreTrainedModel.from_pretrained` (`quantization_config`, `device_map`, ...).
        """
        check_checkpoint_config(pretrained_model_name_or_path, kwargs)
        # Checkpoints written before `LowRankDelta`'s factors were renamed (`lora_A` / `lora_B`) load as they are.
        kwargs["key_mapping"] = {**LEGACY_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        if not allow_missing_weights:
            check_loading_info(info, pretrained_model_name_or_path)
        roles = model.config.role_adapters or []
        if load_role_adapters and roles:
            hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs and key != "subfolder"}
            for role in roles:
                load_role_adapter(model, pretrained_model_name_or_path, role, **hub_kwargs)
            # Outside generate's phases (a plain forward or chat), the model is the reasoner.
            activate_role_adapter(model, "reasoner" if "reasoner" in roles else None)
        elif roles:
            model.config.role_adapters = None
        return (model, info) if wants_info else model

    # ----------------------------------------------------------------------------------------- compression
    def memory_fingerprint(self) -> dict:
        """The settings a memory bank must share with this model to be read by it.

        `weights_digest` covers every weight that can change a block's K/V (backbone, compressor, compressor
        adapter); it is computed once and cached until those weights change.
        """
        config, text = self.config, self.config.text_config
        return {
            "architecture": text.model_type,
            "num_hidden_layers": text.num_hidden_layers,
            "num_key_value_heads": text.num_key_value_heads,
            "head_dim": backbone_head_dim(text),
            "compression_mode": config.compression_mode,
            "chunk_size": config.chunk_size,
            "compression_window": config.compression_window,
            "compression_ratio": config.compression_ratio,
            "memory_token_placement": config.memory_token_placement,
            "dtype": str(self.dtype).replace("torch.", ""),
            "weights_digest": self._weights_digest(),
            "weights_digest_version": WEIGHTS_DIGEST_VERSION,
        }

    def _weights_digest(self, refresh: bool = False) -> str:
        """A hash of every weight that can change a block's K/V, cached per model (see `fingerprint_lychee.py`)."""
        return weights_digest(self, refresh=refresh)

    @torch.inference_mode()
    def compress(
        self,
        context_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        show_progress: bool | None = None,
        offload_to_cpu: bool = False,
        bank_dtype: str | None = None,
        bank_dir: str | os.PathLike | None = None,
    ) -> LycheeMemoryBank:
        """Compresses one document into a reusable memory bank (`generate(..., bank=bank)` reads it).

        Args:
            context_ids (`torch.LongTensor`): (N,) or (1, N) token ids of the document.
            attention_mask (`torch.Tensor`, *optional*): same shape; 0 marks padding to drop.
            show_progress (`bool`, *optional*): progress bar over chunks (default: on for 8+ chunks).
            offload_to_cpu (`bool`): keep the blocks in host memory (they move to the device one at a time).
            bank_dtype (`str`, *optional*): store the blocks as `"float32"`, `"float16"`, `"bfloat16"`, `"int8"`
                or `"int4"` (each block is converted as it is made, on the device; int8/int4 are dequantized
                block by block when read). Default: exactly as computed, in the model's dtype.
                `save_pretrained` then writes this format.
            bank_dir (`str` or `os.PathLike`, *optional*): a new or empty folder to write the blocks into as they
                are made (a saved bank, in `bank_dtype`; default: as computed), instead of keeping them: host
                memory holds one shard of blocks, whatever the document's length. The bank returned reads them back
                from there one at a time; the folder is the caller's to keep or delete.

        Returns:
            `LycheeMemoryBank` with one block per `chunk_size` tokens.
        """
        if offload_to_cpu and bank_dir is not None:
            raise ValueError("Pass offload_to_cpu (blocks in host memory) or bank_dir (blocks on disk), not both.")
        context_ids, attention_mask = check_context(self, context_ids, attention_mask, single=True)
        banks, _ = self._compress_documents(
            unpadded_rows(context_ids, attention_mask), show_progress, offload_to_cpu, bank_dtype, bank_dir
        )
        return banks[0]

    @torch.inference_mode()
    def compress_batch(
        self,
        context_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        show_progress: bool | None = None,
        offload_to_cpu: bool = False,
        bank_dtype: str | None = None,
    ) -> list[LycheeMemoryBank]:
        """`compress` for a (B, N) batch of (padded) documents: one bank per row."""
        context_ids, attention_mask = check_context(self, context_ids, attention_mask, single=False)
        banks, _ = self._compress_documents(
            unpadded_rows(context_ids, attention_mask), show_progress, offload_to_cpu, bank_dtype
        )
        return banks

    def compress_chunks(
        self,
        chunks: list[torch.LongTensor],
        spans: list[tuple[int, int]],
        lossless: bool = False,
        role: str | None = "compressor",
    ) -> list[LycheeMemoryBlock]:
        """Compresses chunks of at most `chunk_size` ids, one block each, in one batch with the `compressor` adapter.

        Gradients are kept (training reads the blocks end to end); `compress` and `generate` call it under
        inference mode.

        Args:
            chunks (`list[torch.LongTensor]`): 1-D token ids, each at most `chunk_size` long (shorter ones are
                padded and their padding masked).
            spans (`list[tuple[int, int]]`): each chunk's [start, end) in its document, stored in the block.
            lossless (`bool`, *optional*, defaults to `False`): make lossless blocks (each chunk's own K/V, exactly
                as `compression_mode="lossless"` does) whatever the config says; the config is not touched.
            role (`str`, *optional*, defaults to `"compressor"`): the adapter active while compressing, as in
                `generate`; `None` runs the plain backbone (a teacher that stays fixed while a `compressor`
                adapter trains).

        Returns:
            `list[LycheeMemoryBlock]`, one per chunk.
        """
        _, pad_id = stop_and_pad_ids(self.generation_config)
        ids = torch.full((len(chunks), self.config.chunk_size), pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for row, chunk in enumerate(chunks):
            ids[row, : chunk.numel()] = chunk
            mask[row, : chunk.numel()] = 1
        with role_adapter(self, role):
            # By keyword: accelerate's hook on an offloaded compressor moves positional tensors and modules.
            keys, values, slot_mask = self.compressor(
                backbone=self.model, chunk_ids=ids, chunk_mask=mask, lossless=lossless
            )
        return [LycheeMemoryBlock(keys[row], values[row], slot_mask[row], span) for row, span in enumerate(spans)]

    def _compress_documents(
        self,
        documents: list[torch.LongTensor],
        show_progress: bool | None,
        offload_to_cpu: bool,
        bank_dtype: str | None = None,
        bank_dir: str | os.PathLike | None = None,
    ) -> tuple[list[LycheeMemoryBank], list[list[float]]]:
        """Chunks every document, compresses the chunks in batches, and returns banks + seconds per block. With
        `bank_dir`, each document's blocks go to its bank folder there as they are made (`bank_writers`)."""
        config = self.config
        if bank_dtype is not None:
            check_bank_dtype(bank_dtype)
        writers = None
        if bank_dir is not None:  # stored as computed unless told: the bank reads as an in-memory one does
            writers = bank_writers(bank_dir, len(documents), bank_dtype)
        chunks = []  # (document index, start, end)
        for doc, ids in enumerate(documents):
            chunks += [(doc, start, end) for start, end in chunk_spans(ids.numel(), config.chunk_size)]
        blocks: list[list[LycheeMemoryBlock]] = [[] for _ in documents]
        seconds: list[list[float]] = [[] for _ in documents]
        progress = logging.tqdm(
            total=len(chunks),
            desc="compressing",
            unit="chunk",
            disable=not wants_progress(show_progress, len(chunks)),
        )
        for first in range(0, len(chunks), config.compress_batch_size):
            batch = chunks[first : first + config.compress_batch_size]
            started = time.perf_counter()
            batch_blocks = self.compress_chunks(
                [documents[doc][start:end] for doc, start, end in batch], [(start, end) for _, start, end in batch]
            )
            elapsed = (time.perf_counter() - started) / len(batch)
            for (doc, _, _), block in zip(batch, batch_blocks):
                block = block.astype(bank_dtype) if bank_dtype is not None else block
                if writers is not None:
                    writers[doc].add(block)
                else:
                    blocks[doc].append(block.to("cpu") if offload_to_cpu else block)
                seconds[doc].append(elapsed)
            progress.update(len(batch))
        progress.close()
        fingerprint = self.memory_fingerprint()  # after compressing: a quantized backbone settles on first use
        if writers is not None:
            return [writer.finish(fingerprint) for writer in writers], seconds
        banks = [LycheeMemoryBank(doc_blocks, fingerprint, bank_dtype) for doc_blocks in blocks]
        return banks, seconds

    # ----------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        context_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.Tensor | None = None,
        bank: LycheeMemoryBank | list[LycheeMemoryBank] | None = None,
        generation_config: GenerationConfig | None = None,
        memory_generation_config: GenerationConfig | None = None,
        show_progress: bool | None = None,
        bank_dtype: str | None = None,
        bank_dir: str | os.PathLike | None = None,
        **kwargs,
    ):
        """Answers questions over long documents; without `context_ids`/`memory`, plain `GenerationMixin.generate`.

        Args:
            input_ids (`torch.LongTensor`): (B, L) the questions (plain text ids, no chat template), may be
                left- or right-padded with `attention_mask`.
            attention_mask (`torch.Tensor`, *optional*): (B, L) mask of `input_ids`.
            context_ids (`torch.LongTensor`, *optional*): (B, N) the documents, compressed during the call.
            context_attention_mask (`torch.Tensor`, *optional*): (B, N) mask of `context_ids`.
            bank (`LycheeMemoryBank` or `list`, *optional*): prebuilt bank(s) instead of `context_ids`: one bank
                for every row, or one per row. (`memory=` is its deprecated name: "memory" is the reasoner's
                working memory.)
            generation_config (`GenerationConfig`, *optional*): decoding of the final answer; memory updates use
                the same settings with `memory_budget` new tokens. `streamer`, `stopping_criteria` and
                `logits_processor` apply to the final answer only.
            memory_generation_config (`GenerationConfig`, *optional*): decoding of the memory updates instead
                (e.g. `min_new_tokens = max_new_tokens` for fixed-length updates in benchmarks).
            show_progress (`bool`, *optional*): progress bars over chunks and blocks (default: on for 8+).
            bank_dtype (`str`, *optional*): with `context_ids`, keep the compressed blocks in this storage format
                (`"float16"`, `"int8"`, `"int4"`, ...; default: as computed), exactly as a bank saved in it reads.
            bank_dir (`str` or `os.PathLike`, *optional*): with `context_ids`, write the compressed blocks into this
                new or empty folder as they are made and read them back from disk one at a time, so host memory
                does not grow with the documents (see `compress`): the bank itself for one row, `bank_dir/00000`,
                `bank_dir/00001`, ... for several. Answers are those of the in-memory call. The folder is the
                caller's (e.g. a `tempfile.TemporaryDirectory()`).
            **kwargs: generation settings and model kwargs, as for `GenerationMixin.generate`; and the gate
                policy for this call: `gate_threshold`, `gate_max_blocks`, `gate_keep_last`, `gate_revisit`
                (default: the config's); and `answer_not_found` (answer "not found" when nothing was read or
                learnt; default: the config's); and `answer_from` (`"memory"` or `"evidence"`: copy the answer
                from the best read passage; default: the config's); and the first stage: `first_stage`
                (`"full_scan"` or `"lexical"`), `first_stage_candidates`, `first_stage_sample` (default: the
                config's; `"lexical"` needs `tokenizer=`, which also serves `stop_strings`).
                `synced_gpus` applies to the memory updates too (processes that read different numbers of blocks
                call `generate` a different number of times: pass `False` where each process holds whole weights).

        Returns:
            `torch.LongTensor` (B, L + answer) = questions followed by the answers, or with
            `return_dict_in_generate=True` a `LycheeGenerateOutput` whose `trace` holds one `LycheeTrace` per row
            (its `LycheeBlockTrace` records, with every turn's prompt ids, and the final answer's prompt and ids).
        """
        bank = _take_deprecated_memory_kwarg(kwargs, bank)
        if context_ids is None and bank is None:
            return super().generate(
                input_ids, generation_config=generation_config, attention_mask=attention_mask, **kwargs
            )
        if context_ids is not None and bank is not None:
            raise ValueError("Pass either context_ids (compress now) or bank (a prebuilt bank), not both.")
        if bank_dtype is not None and context_ids is None:
            raise ValueError(
                "bank_dtype applies to context_ids (compressed in the call); a prebuilt bank keeps its own format."
            )
        if bank_dir is not None and context_ids is None:
            raise ValueError(
                "bank_dir applies to context_ids (compressed in the call); a prebuilt bank is read from where it is."
            )
        check_adapter_names(self)
        policy = GatePolicy.from_config(self.config, **{k: kwargs.pop(k) for k in GATE_POLICY_KWARGS if k in kwargs})
        answer_not_found = kwargs.pop("answer_not_found", None)
        answer_from = kwargs.pop("answer_from", None)
        if answer_from not in (None, *ANSWER_SOURCES):
            raise ValueError(f"answer_from={answer_from!r} is not one of {ANSWER_SOURCES}.")
        first_stage = FirstStage.from_config(
            self.config, kwargs.get("tokenizer"), {k: kwargs.pop(k) for k in FIRST_STAGE_KWARGS if k in kwargs}
        )
        questions = check_questions(self, input_ids, attention_mask)
        if context_ids is not None:
            context_ids, context_attention_mask = check_context(self, context_ids, context_attention_mask, single=False)
            if context_ids.shape[0] != len(questions):
                raise ValueError(
                    f"input_ids has {len(questions)} rows but context_ids has {context_ids.shape[0]}: one document "
                    "per question (repeat the document, or compress it once and pass bank=bank)."
                )
            banks, compress_seconds = self._compress_documents(
                unpadded_rows(context_ids, context_attention_mask), show_progress, False, bank_dtype, bank_dir
            )
        else:
            banks, compress_seconds = check_banks(self, bank, len(questions)), None

        final_config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        kwargs = final_config.update(**kwargs)
        if final_config.max_new_tokens is None and final_config.max_length == GenerationConfig().max_length:
            final_config.max_new_tokens = self.config.max_answer_tokens
        check_prompt_lengths(self.config, questions, final_config.max_new_tokens)
        update_config = memory_update_config(final_config, self.config.memory_budget, memory_generation_config)
        loop = ReasonerLoop(
            self, update_config, final_config, show_progress, policy, answer_not_found, first_stage, answer_from
        )
        answers, output = loop.run(questions, banks, compress_seconds, **kwargs)

        sequences = torch.cat([input_ids.to(answers.device), answers], dim=1)
        if isinstance(output, torch.Tensor):
            return sequences
        fields = {key: value for key, value in output.items() if key != "sequences"}
        return LycheeGenerateOutput(sequences=sequences, trace=loop.traces, **fields)


def _take_deprecated_memory_kwarg(kwargs: dict, bank):
    """`memory=BANK` was `generate`'s name for the bank before 0.2; it still works, with a `FutureWarning`."""
    if "memory" not in kwargs:
        return bank
    memory = kwargs.pop("memory")
    if bank is not None:
        raise ValueError("Pass the bank once, as bank=... (memory= is its deprecated name).")
    warnings.warn(
        "generate(memory=...) is deprecated: pass the bank as bank=... ('memory' is the reasoner's working memory).",
        FutureWarning,
        stacklevel=3,
    )
    return memory


LycheeMemoryConfig.register_for_auto_class()
LycheeMemoryForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["LycheeMemoryForCausalLM"]
