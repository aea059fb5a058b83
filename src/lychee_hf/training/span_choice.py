"""The span-choice objective: teaches the reasoner's final turn to pick the asked value among a passage's values.

With `answer_from="evidence"` the answer is the candidate span of the best passage (`extract_lychee`) that the
reasoner's final turn, with the passage as its memory, finds most likely. On held-out genres most wrong answers
are then another value of the right sentence ("£215.00 before the last price change" for "£377.35 a month"):
the documents state one value of the asked kind beside another, on purpose. This objective trains exactly that
choice: a row is a training example's gold sentence (its `supporting` span), the spans `answer_candidates` finds
in it (the gold answer among them), and the loss is the cross-entropy of the gold answer under a softmax over the
candidates' mean log-probabilities, the very scores inference ranks by (`candidate_log_probs`).

Only the final turn is trained, and only the `reasoner` adapter: the memory-update turns share that adapter, so a
run is measured on the held-out genres and the held-out fact families before it ships.
"""

from dataclasses import dataclass

import torch
from transformers import Trainer, TrainingArguments

from ..data import QAExample
from ..modeling import answer_candidates, candidate_log_probs, stop_and_pad_ids
from .trainer_utils import ListDataset, checkpoint_to_resume, start_reasoner_training


@dataclass
class SpanChoiceRow:
    """One choice: which of a passage's spans answers the question.

    Attributes:
        question_ids (`list[int]`): the question's tokens.
        passage_ids (`list[int]`): the gold sentence's tokens (in place of the working memory).
        candidate_ids (`list[list[int]]`): every candidate span's tokens, the gold answer's included.
        gold (`int`): the index of the gold answer in `candidate_ids`.
    """

    question_ids: list[int]
    passage_ids: list[int]
    candidate_ids: list[list[int]]
    gold: int


def build_span_choice_rows(tokenizer, examples: list[QAExample], max_candidates: int = 24) -> list[SpanChoiceRow]:
    """The span-choice rows of `examples`: each answerable example whose gold sentence holds its answer and at
    least one other candidate gives one row (an unanswerable one, or a sentence with a single candidate, teaches
    no choice).

    Args:
        tokenizer: the model's tokenizer.
        examples (`list[QAExample]`): examples with `supporting` character spans and gold `answers`.
        max_candidates (`int`, *optional*, defaults to 24): candidates kept per row (the gold one always), to
            bound one row's batch.

    Returns:
        `list[SpanChoiceRow]`, in the order of `examples`.
    """
    rows = []
    for example in examples:
        if not example.answers or not example.supporting:
            continue
        start, end = example.supporting[0]
        passage = example.context[start:end]
        answer = example.answers[0]
        if answer not in passage:
            continue
        others = [span for span in answer_candidates(passage, example.question) if span != answer]
        if not others:
            continue
        candidates = [answer] + others[: max_candidates - 1]
        rows.append(
            SpanChoiceRow(
                question_ids=tokenizer.encode(example.question, add_special_tokens=False),
                passage_ids=tokenizer.encode(passage, add_special_tokens=False),
                candidate_ids=[tokenizer.encode(span, add_special_tokens=False) for span in candidates],
                gold=0,
            )
        )
    return rows


def span_choice_loss(model, row: SpanChoiceRow, stop_id: int) -> torch.Tensor:
    """Cross-entropy of `row`'s gold candidate under a softmax over the candidates' mean log-probabilities.

    Args:
        model (`LycheeMemoryForCausalLM`): the model being trained.
        row (`SpanChoiceRow`): one choice.
        stop_id (`int`): the answer's stop token.

    Returns:
        `torch.Tensor`: a scalar.
    """
    scores = candidate_log_probs(model, row.question_ids, row.passage_ids, row.candidate_ids, stop_id)
    return torch.nn.functional.cross_entropy(scores[None], torch.tensor([row.gold], device=scores.device))


class SpanChoiceTrainer(Trainer):
    """A `Trainer` whose loss is `span_choice_loss` of each row in the micro-batch (averaged); rows pass through
    the collator as they are."""

    def __init__(self, *args, stop_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_id = stop_id

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = [span_choice_loss(model, row, self.stop_id) for row in inputs["rows"]]
        loss = torch.stack(losses).mean()
        return (loss, None) if return_outputs else loss


def _collate_rows(rows: list[SpanChoiceRow]) -> dict:
    return {"rows": rows}


def train_span_choice(
    model,
    tokenizer,
    examples: list[QAExample],
    args: TrainingArguments,
    peft_config=None,
    callbacks: list | None = None,
    resume_from_checkpoint: bool | str | None = None,
) -> Trainer:
    """Fits the `reasoner` adapter of `model` in place to the span choices of `examples` (see the module's
    docstring); every other weight is frozen.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (a model without a `reasoner` adapter gets a fresh one from
            `peft_config`).
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): training examples with `supporting` spans (their gold sentences).
        args (`TrainingArguments`): the trainer's settings (`LycheeTrainingArguments`; a row is one choice, use
            `gradient_accumulation_steps` for the batch size).
        peft_config (`peft.LoraConfig`, *optional*): the new adapter, when the model has none.
        callbacks (`list`, *optional*): trainer callbacks.
        resume_from_checkpoint (`bool` or `str`, *optional*): continue from the last checkpoint in
            `args.output_dir` (`True`) or from this folder.

    Returns:
        `transformers.Trainer`: the finished trainer.

    Raises:
        `ValueError`: when no example gives a choice (no gold sentence holds its answer and another candidate), or
            under a launch of several processes.
    """
    if args.world_size > 1:  # the loss reads the model's config and device, which a DDP wrapper hides
        raise ValueError(
            f"train_span_choice runs in one process; this launch has {args.world_size}. Run it without "
            "torchrun / accelerate launch (a few hundred rows take minutes on a CPU)."
        )
    rows = build_span_choice_rows(tokenizer, examples)
    if not rows:
        raise ValueError(
            "None of the examples gives a span choice: each needs a gold answer standing in its first `supporting` "
            "span beside at least one other name, number or code."
        )
    start_reasoner_training(model, peft_config)
    trainer = SpanChoiceTrainer(
        model=model,
        args=args,
        train_dataset=ListDataset(rows),
        data_collator=_collate_rows,
        callbacks=callbacks,
        stop_id=stop_and_pad_ids(model.generation_config)[0][0],
    )
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(args.output_dir, resume_from_checkpoint))
    model.eval()
    return trainer
