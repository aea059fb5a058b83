"""Publishing lychee-hf checkpoints (model repos) and memory banks (dataset repos) to the Hugging Face Hub.

Before anything is uploaded the folder is checked the way a user will use it: a checkpoint is reloaded with
`trust_remote_code=True` in a fresh process that cannot import `lychee_hf` and runs a short generate; a bank is
opened and every block is read and checksummed. A folder that fails is never published. A bank whose manifest is
invalid or whose writing never finished is refused even by a dry run or with `check=False`, and only the files its
manifest lists (plus the card and any other file of yours) are uploaded, never leftovers of an interrupted write.
"""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .modeling import BANK_FILE_PATTERN, MANIFEST_NAME, LycheeMemoryBank


class PublishError(RuntimeError):
    """The folder cannot be published as it is: the message says why."""


@dataclass
class PublishPlan:
    """What `push_to_hub` would upload."""

    folder: Path
    repo_id: str
    repo_type: str  # "model" for checkpoints, "dataset" for memory banks
    files: list[tuple[str, int]]  # (path in repo, bytes)
    card: str

    def describe(self) -> str:
        lines = [f"{self.repo_type} repo {self.repo_id}: {len(self.files)} files from {self.folder}"]
        lines += [f"  {path}  ({size / 2**20:.2f} MiB)" for path, size in self.files]
        return "\n".join(lines + ["", "--- card (README.md) ---", self.card])


def plan_upload(folder: str | Path, repo_id: str) -> PublishPlan:
    """Classifies `folder` and lists what would be uploaded, with its card (rendered when the folder has none)."""
    folder = Path(folder)
    leftovers = set()
    if (folder / MANIFEST_NAME).is_file():
        repo_type = "dataset"
        leftovers = _bank_leftovers(folder)
    elif (folder / "config.json").is_file():
        repo_type = "model"
    else:
        raise PublishError(f"{folder} is neither a checkpoint (config.json) nor a memory bank ({MANIFEST_NAME})")
    if "/" not in repo_id:
        raise PublishError(f"--repo-id {repo_id!r} must name an owner: ORG/NAME")
    files = sorted(
        (str(path.relative_to(folder)), path.stat().st_size)
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.name not in leftovers
    )
    card_path = folder / "README.md"
    card = card_path.read_text() if card_path.is_file() else _render_card(folder, repo_id, repo_type)
    if not card_path.is_file():
        files.append(("README.md", len(card.encode())))
    return PublishPlan(folder, repo_id, repo_type, files, card)


def check_before_upload(plan: PublishPlan, timeout: int = 600) -> None:
    """Raises `PublishError` unless the folder loads and runs as users will load and run it."""
    if plan.repo_type == "dataset":
        try:
            LycheeMemoryBank.from_pretrained(plan.folder).verify()
        except ValueError as error:
            raise PublishError(f"the memory bank does not load: {error}") from error
        return
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_CODE_CHECK, str(plan.folder)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise PublishError(f"the checkpoint does not load with trust_remote_code and generate: {tail[0]}")


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    check: bool = True,
    token: str | None = None,
) -> PublishPlan | str:
    """Uploads a checkpoint folder (model repo) or a memory bank (dataset repo) with `huggingface_hub`.

    Args:
        folder (`str` or `Path`): a lychee-hf checkpoint or memory-bank folder.
        repo_id (`str`): `ORG/NAME`.
        private (`bool`): create the repo private.
        revision (`str`, *optional*): branch to upload to (created if missing).
        commit_message (`str`, *optional*): the commit message.
        dry_run (`bool`): only return the plan (files and card); nothing is checked or sent.
        check (`bool`): reload and run the folder before uploading (see module docstring).
        token (`str`, *optional*): Hub token (default: the logged-in one).

    Returns:
        The `PublishPlan` for a dry run, else the URL of the commit.
    """
    from huggingface_hub import HfApi

    plan = plan_upload(folder, repo_id)
    if dry_run:
        return plan
    if check:
        check_before_upload(plan)
    if not (plan.folder / "README.md").is_file():
        (plan.folder / "README.md").write_text(plan.card)  # added, never over a card the user wrote
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=plan.repo_type, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type=plan.repo_type, exist_ok=True)
    default_message = f"Upload lychee-hf {'checkpoint' if plan.repo_type == 'model' else 'memory bank'}"
    info = api.upload_folder(
        folder_path=plan.folder,
        repo_id=repo_id,
        repo_type=plan.repo_type,
        revision=revision,
        commit_message=commit_message or default_message,
        allow_patterns=[path for path, _ in plan.files],  # exactly the planned files
    )
    return str(getattr(info, "commit_url", info))


def _bank_leftovers(folder: Path) -> set[str]:
    """Bank-named files of `folder` that its manifest does not list (an interrupted write's temporaries or shards).

    Raises `PublishError` for a bank that is invalid or unfinished: it must never reach the Hub.
    """
    try:
        bank = LycheeMemoryBank.from_pretrained(folder)
    except ValueError as error:
        raise PublishError(f"the memory bank does not load: {error}") from error
    listed = {path.name for path in bank.stored_files()} | {MANIFEST_NAME}
    return {p.name for p in folder.iterdir() if BANK_FILE_PATTERN.fullmatch(p.name) and p.name not in listed}


def _render_card(folder: Path, repo_id: str, repo_type: str) -> str:
    if repo_type == "model":
        from .model_card import render_model_card
        from .modeling import LycheeMemoryConfig

        config = LycheeMemoryConfig.from_pretrained(folder)
        base_model = config.text_config.name_or_path or None
        return render_model_card(config, base_model=base_model, repo_id=repo_id, training=folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    settings = "\n".join(f"| {key} | {value} |" for key, value in manifest["fingerprint"].items())
    return (
        textwrap.dedent(f"""\
        ---
        tags:
        - lychee-memory
        - memory-bank
        ---

        # {repo_id.split("/")[-1]}

        A LycheeMemory memory bank: a document compressed once ({manifest["num_tokens"]} tokens,
        {len(manifest["blocks"])} blocks), to answer many questions with the model that made it.

        ```python
        from huggingface_hub import snapshot_download
        from lychee_hf import LycheeMemoryBank
        bank = LycheeMemoryBank.from_pretrained(snapshot_download("{repo_id}", repo_type="dataset"))
        out = model.generate(input_ids=question_ids, bank=bank)
        ```

        | setting | value |
        |---|---|
        """)
        + settings
        + "\n"
    )


# Runs in a fresh interpreter that cannot import lychee_hf: what a Hub user with trust_remote_code gets.
_REMOTE_CODE_CHECK = """
import sys
sys.modules["lychee_hf"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, memory_budget=2)  # a short run
tokenizer = AutoTokenizer.from_pretrained(folder)
context = torch.tensor([tokenizer.encode("The harbour vault code is 4721. " * 8, add_special_tokens=False)])
question = torch.tensor([tokenizer.encode("What is the code?", add_special_tokens=False)])
out = model.generate(input_ids=question, context_ids=context, max_new_tokens=2, show_progress=False)
assert out.shape[1] > question.shape[1]
"""
