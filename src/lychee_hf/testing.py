"""Tiny tokenizers and backbones built in code (no downloads), and the CLI run in-process, shared by the tests."""

import contextlib
import functools
import io
import re
import subprocess
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from lychee_hf import LycheeMemoryForCausalLM

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The above is a newly provided section, which may or may not contain information relevant to answering.",
    "Please read the provided section carefully and update the memory with any new information.",
    "You are presented with a problem and a previous memory. Your answer: Updated memory: No previous memory",
    "<problem> </problem> <memory> </memory> <previous_memory> </previous_memory> system user assistant",
    "Alice was born in Paris. Paris is the capital of France. In which country was Alice born? France!",
    "The secret code is 4721. What is the secret code? The quick brown fox jumps over the lazy dog.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ ?!.,;:\n\n",
]


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (~400 ids) with a Qwen-style chat template; eos = <|im_end|>."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_backbone(
    kind: str = "llama",
    seed: int = 0,
    vocab_size: int | None = None,
    num_layers: int = 2,
    num_kv_heads: int = 2,
    head_dim: int | None = None,
):
    """A random causal LM (2 layers, 2 kv heads and head_dim 16 unless told, hidden 64, 4 heads) in fp32, eval
    mode."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    common = dict(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        bos_token_id=None,
    )
    if head_dim is not None:
        common["head_dim"] = head_dim
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    else:
        raise ValueError(kind)
    return model.eval()


def tiny_lychee(
    kind: str = "llama",
    seed: int = 0,
    attn_implementation: str = "eager",
    num_layers: int = 2,
    num_kv_heads: int = 2,
    head_dim: int | None = None,
    **knobs,
):
    """A LycheeMemory model over a tiny backbone with small knobs: chunk 64, window 32, ratio 4, budget 16."""
    settings = dict(chunk_size=64, compression_window=32, compression_ratio=4, memory_budget=16, max_answer_tokens=8)
    settings.update(knobs)
    backbone = tiny_backbone(kind, seed, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
    backbone.set_attn_implementation(attn_implementation)
    model = LycheeMemoryForCausalLM.from_backbone(backbone, tiny_tokenizer(), **settings)
    perturb_memory_weights(model, seed)
    return model


def perturb_memory_weights(model: LycheeMemoryForCausalLM, seed: int) -> None:
    """Makes the memory embedding and projections differ from the backbone's, as trained ones would."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.compressor.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def document_ids(tokenizer, n_tokens: int, seed: int = 0) -> torch.LongTensor:
    """(1, n_tokens) random ordinary-token ids (special tokens excluded)."""
    generator = torch.Generator().manual_seed(seed)
    low = len(SPECIAL_TOKENS)
    return torch.randint(low, len(tokenizer), (1, n_tokens), generator=generator)


def question_ids(tokenizer, text: str = "What is the secret code?") -> torch.LongTensor:
    return torch.tensor([tokenizer.encode(text, add_special_tokens=False)])


def run_cli(*argv) -> tuple[int, str, str]:
    """`lychee-hf ARGV` in this process: (exit status, stdout, stderr). argparse's own exits (a usage error: 2,
    `--help`: 0) give their status as a real process would."""
    from lychee_hf.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(word) for word in argv])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


# `lychee-hf ARGV` in a fresh interpreter that reports its peak RSS (VmHWM: the peak of this process's own memory;
# `ru_maxrss` would start at the parent's, which Linux carries across fork and exec) as its last stderr line.
PEAK_RSS_RUN = """
import sys
from lychee_hf.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(f"peak RSS kB {peak}", file=sys.stderr)
sys.exit(code)
"""


def cli_peak_rss(*argv, env: dict | None = None) -> tuple[int, str, str]:
    """`lychee-hf ARGV` in a fresh process (Linux): (its peak RSS in bytes, stdout, stderr).

    Raises:
        `RuntimeError` with the end of stderr when the command fails.
    """
    command = [sys.executable, "-c", PEAK_RSS_RUN, *(str(word) for word in argv)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"lychee-hf {' '.join(map(str, argv))} exited {done.returncode}: {done.stderr[-3000:]}")
    return int(re.findall(r"^peak RSS kB (\d+)$", done.stderr, re.MULTILINE)[-1]) * 1024, done.stdout, done.stderr


def save_tiny_checkpoint(path, **knobs):
    """Saves `tiny_lychee(**knobs)` and the tiny tokenizer to `path` (a checkpoint folder the CLI can load); returns
    `path`."""
    tiny_lychee(**knobs).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
