"""Prompt templates of the reasoner, turned into token-id pieces once so that `generate` needs no tokenizer.

The texts are the authors' prompts (their quirks kept: the trailing space after `<problem>`, "memory.You").
As in their release, a template is wrapped in the tokenizer's chat template as one user message with the
generation prompt, split around `{prompt}` and `{memory}`, and each literal piece is tokenized on its own;
question and memory ids are spliced in between. Tokenizing the rendered prompt whole can give other ids.
"""

MEMORY_UPDATE_TEMPLATE = """
The above is a newly provided section, which may or may not contain information relevant to answering the problem. The previously summarized memory is stored within the <previous_memory> tags, and the problem is specified within the <problem> tags. Please read the provided section carefully and update the memory with any new information that helps address the problem. Be sure to retain all relevant details from the previous memory while incorporating any new, useful information.

<problem> 
{prompt}
</problem>

<previous_memory>
{memory}
</previous_memory>

Updated memory:
"""

FINAL_ANSWER_TEMPLATE = """You are presented with a problem and a previous memory.You do not need to update the memory, directly answer the problem based on the previous memory.

<problem> 
{prompt}
</problem>

<memory>
{memory}
</memory>

Your answer:
"""

INITIAL_MEMORY = "No previous memory"

# Read by the query-likelihood gate right after a block: how likely the question is, given the block.
GATE_TEMPLATE = "\n\nQuestion: {prompt}"

# Read by the classifier gate right after a block, as one chat turn; the reply's first token is yes or no.
CLASSIFIER_GATE_TEMPLATE = """
The above is one section of a long document.

Question: {prompt}
What we know so far: {memory}

Does this section hold information that helps answer the question and is not known yet? Answer yes or no.
"""
GATE_LABELS = ("yes", "no")

_MESSAGE_SENTINEL = "\x00LYCHEE_MESSAGE\x00"


def render_in_chat_template(tokenizer, template: str) -> str:
    """The template as the single user turn of the tokenizer's chat template, generation prompt included.

    A tokenizer without a chat template gets the bare template (a base model reads it as plain text).
    """
    if not getattr(tokenizer, "chat_template", None):
        return template
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": _MESSAGE_SENTINEL}], add_generation_prompt=True, tokenize=False
    )
    if rendered.count(_MESSAGE_SENTINEL) != 1:
        raise ValueError("The tokenizer's chat template does not render the user message exactly once.")
    return rendered.replace(_MESSAGE_SENTINEL, template)


def tokenize_template(tokenizer, template: str) -> list[list[int]]:
    """Splits a chat-wrapped template around `{prompt}` then `{memory}` and tokenizes the three pieces apart.

    Returns:
        `list[list[int]]`: [ids before the question, ids between question and memory, ids after the memory].
    """
    rendered = render_in_chat_template(tokenizer, template)
    if rendered.count("{prompt}") != 1 or rendered.count("{memory}") != 1:
        raise ValueError("A template must contain `{prompt}` and `{memory}` exactly once each, in that order.")
    before, rest = rendered.split("{prompt}")
    if "{memory}" not in rest:
        raise ValueError("A template must place `{prompt}` before `{memory}`.")
    middle, after = rest.split("{memory}")
    return [tokenizer.encode(piece, add_special_tokens=False) for piece in (before, middle, after)]


def tokenize_gate_template(tokenizer, template: str) -> list[list[int]]:
    """The gate prompt (plain text, no chat turn) as [ids before the question, ids after it]."""
    if template.count("{prompt}") != 1:
        raise ValueError("The gate template must contain `{prompt}` exactly once.")
    before, after = template.split("{prompt}")
    return [tokenizer.encode(piece, add_special_tokens=False) for piece in (before, after)]


def gate_label_ids(tokenizer) -> list[int] | None:
    """The first token of "yes" and of "no" as the chat reply starts them; `None` if the tokenizer merges them."""
    ids = [tokenizer.encode(label, add_special_tokens=False)[:1] for label in GATE_LABELS]
    if not all(ids) or ids[0] == ids[1]:
        return None
    return [ids[0][0], ids[1][0]]


def gate_template_ids(tokenizer, gate_type: str, gate_template: str | None = None) -> list[list[int]] | None:
    """The gate prompt's pieces for `gate_type`: [before, after] the question (query likelihood, plain text), or
    [before, between, after] question and memory (classifier, chat-wrapped like the reasoner's prompts)."""
    if gate_type == "classifier":
        return tokenize_template(tokenizer, gate_template or CLASSIFIER_GATE_TEMPLATE)
    return tokenize_gate_template(tokenizer, gate_template or GATE_TEMPLATE)


UNANSWERABLE_ANSWER = "Not found in the document."


def template_config_ids(
    tokenizer,
    memory_update_template: str = MEMORY_UPDATE_TEMPLATE,
    final_answer_template: str = FINAL_ANSWER_TEMPLATE,
    initial_memory: str = INITIAL_MEMORY,
    gate_template: str | None = None,
    gate_type: str = "always_related",
    unanswerable_answer: str = UNANSWERABLE_ANSWER,
) -> dict:
    """The `LycheeMemoryConfig` template fields, tokenized for `tokenizer` (piecewise, as the authors do)."""
    return {
        "update_template_ids": tokenize_template(tokenizer, memory_update_template),
        "final_template_ids": tokenize_template(tokenizer, final_answer_template),
        "gate_template_ids": gate_template_ids(tokenizer, gate_type, gate_template),
        "gate_label_ids": gate_label_ids(tokenizer),
        "initial_memory_ids": tokenizer.encode(initial_memory, add_special_tokens=False),
        "unanswerable_answer_ids": tokenizer.encode(unanswerable_answer, add_special_tokens=False),
    }
