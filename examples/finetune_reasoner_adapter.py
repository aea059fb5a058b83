"""Fine-tune the reasoner's LoRA adapter with PEFT on a small synthetic task, and compare accuracy before/after.

    python examples/finetune_reasoner_adapter.py                 # the embedded default model (CPU: ~15 min)
    python examples/finetune_reasoner_adapter.py --model DIR --task mhqa --length 2k --train 64 --test 16

The standard PEFT workflow: `peft.get_peft_model(model, LoraConfig(...), adapter_name="reasoner")`, a plain
`transformers.Trainer`, `save_pretrained`. The training rows are the gold-fact teacher's steps (each block's
memory update, then the final answer; see `lychee_hf.training.reasoner`). `generate` runs the `reasoner`
adapter for memory updates and the answer only; compression and gating are unchanged. Train and test examples
come from different generator seeds, so they never overlap.
"""

import argparse

import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoTokenizer, Trainer, TrainingArguments

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.data import TASKS, parse_length
from lychee_hf.metrics import score
from lychee_hf.modeling.adapters_lychee import BACKBONE_LORA_TARGETS
from lychee_hf.training.reasoner import ReasonerStepCollator, build_reasoner_steps
from lychee_hf.training.trainer_utils import ListDataset


def accuracy(model, tokenizer, examples, desc: str) -> float:
    """Mean sub-EM of greedy answers."""
    total = 0.0
    for example in tqdm(examples, desc=desc, unit="question"):
        question = torch.tensor([tokenizer.encode(example.question, add_special_tokens=False)])
        context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)])
        out = model.generate(input_ids=question, context_ids=context, do_sample=False, show_progress=False)
        answer = tokenizer.decode(out[0, question.shape[1] :], skip_special_tokens=True)
        total += score(answer, example.answers)["sub_em"]
    return total / len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the embedded SmolLM2-135M model)")
    parser.add_argument("--task", default="mhqa", choices=sorted(TASKS))
    parser.add_argument("--length", default="1k", help="context length in tokens")
    parser.add_argument("--train", type=int, default=48, help="training examples")
    parser.add_argument("--test", type=int, default=16, help="held-out examples")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--out", default="reasoner-adapter", help="where the adapter is saved")
    args = parser.parse_args()

    if args.model is None:
        from lychee_hf.default_model import ensure_default_model

        args.model = str(ensure_default_model())
    model = LycheeMemoryForCausalLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    length = parse_length(args.length)
    train = TASKS[args.task](tokenizer, length, args.train, seed=2000)
    test = TASKS[args.task](tokenizer, length, args.test, seed=3000)

    before = accuracy(model, tokenizer, test, "accuracy before")
    steps = build_reasoner_steps(model, tokenizer, train)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=BACKBONE_LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora, adapter_name="reasoner")
    peft_model.print_trainable_parameters()
    trainer = Trainer(
        model=peft_model,
        args=TrainingArguments(
            output_dir=f"{args.out}/trainer",
            num_train_epochs=args.epochs,
            per_device_train_batch_size=1,  # block steps and final steps have different inputs
            gradient_accumulation_steps=8,
            learning_rate=2e-4,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            remove_unused_columns=False,
            seed=0,
        ),
        train_dataset=ListDataset(steps),
        data_collator=ReasonerStepCollator(model),  # compresses each step's chunk (no gradients)
    )
    trainer.train()
    peft_model.eval()
    after = accuracy(peft_model, tokenizer, test, "accuracy after")
    peft_model.save_pretrained(args.out)  # PEFT's layout: <out>/reasoner/adapter_model.safetensors

    print(f"\n{args.task} at {length} tokens, {args.test} held-out examples, greedy, sub-EM")
    print(f"{'reasoner':<22}{'accuracy':>10}")
    print(f"{'before (no adapter)':<22}{before:>10.3f}")
    print(f"{'after (LoRA, PEFT)':<22}{after:>10.3f}")
    print(f"adapter saved to {args.out}/reasoner; load it with model.load_role_adapter({args.out!r}, 'reasoner')")


if __name__ == "__main__":
    main()
