import huggingface_hub.constants
import pytest
from fake_hub import FakeHub

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.testing import document_ids, run_cli, save_tiny_checkpoint, tiny_lychee


@pytest.fixture
def run_push(monkeypatch):
    """`lychee-hf push ARGS` in this process, against the Hub at `endpoint` (nothing listens at the default)."""

    def run(*args, endpoint="http://127.0.0.1:9"):
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # read once, at import
        monkeypatch.setenv("HF_ENDPOINT", endpoint)  # the reload check's own process
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        return run_cli("push", *args)

    return run


@pytest.fixture
def checkpoint(tmp_path):
    return save_tiny_checkpoint(tmp_path / "ckpt")


def test_push_uploads_a_checkpoint_to_a_private_branch(run_push, checkpoint, tmp_path):
    with FakeHub(tmp_path / "hub") as hub:
        code, out, err = run_push(
            str(checkpoint),
            "--repo-id",
            "me/tiny-lychee",
            "--private",
            "--revision",
            "v1",
            "--commit-message",
            "first upload",
            endpoint=hub.endpoint,
        )
    assert code == 0, err
    assert "uploaded:" in out
    assert hub.repos["me/tiny-lychee"]["visibility"] == "private"
    assert ("POST", "/api/models/me/tiny-lychee/branch/v1", {"branch": "v1"}) in hub.requests
    commit = next(payload for method, path, payload in hub.requests if path.endswith("/commit/v1"))
    assert commit["summary"] == "first upload"
    stored = tmp_path / "hub" / "models" / "me" / "tiny-lychee" / "v1"
    for name in ("config.json", "model.safetensors", "modeling_lychee.py", "tokenizer.json", "README.md"):
        assert (stored / name).read_bytes() == (checkpoint / name).read_bytes(), name
    assert "library_name: transformers" in (stored / "README.md").read_text()
    # The published folder is a working checkpoint.
    assert LycheeMemoryForCausalLM.from_pretrained(stored).config.chunk_size == 64


def test_dry_run_prints_files_and_card_and_sends_nothing(run_push, checkpoint, tmp_path):
    with FakeHub(tmp_path / "hub") as hub:
        code, out, err = run_push(str(checkpoint), "--repo-id", "me/x", "--dry-run", endpoint=hub.endpoint)
    assert code == 0, err
    assert "model repo me/x" in out and "model.safetensors" in out and "pipeline_tag: text-generation" in out
    assert hub.requests == []
    assert not (checkpoint / "README.md").exists()  # a dry run writes nothing either


def test_a_broken_checkpoint_is_never_published(run_push, checkpoint, tmp_path):
    (checkpoint / "modeling_lychee.py").write_text("raise ImportError('broken on purpose')\n")
    with FakeHub(tmp_path / "hub") as hub:
        code, _, err = run_push(str(checkpoint), "--repo-id", "me/broken", endpoint=hub.endpoint)
    assert code == 2 and "does not load with trust_remote_code" in err and "Traceback" not in err
    assert hub.requests == []


def test_a_memory_bank_goes_to_a_dataset_repo(run_push, tmp_path, tokenizer):
    model = tiny_lychee()
    model.compress(document_ids(tokenizer, 100)).save_pretrained(tmp_path / "bank")
    with FakeHub(tmp_path / "hub") as hub:
        code, _, err = run_push(str(tmp_path / "bank"), "--repo-id", "me/my-bank", endpoint=hub.endpoint)
    assert code == 0, err
    assert hub.repos["me/my-bank"]["type"] == "dataset"
    stored = tmp_path / "hub" / "datasets" / "me" / "my-bank" / "main"
    assert (stored / "bank.json").read_bytes() == (tmp_path / "bank" / "bank.json").read_bytes()
    assert "memory-bank" in (stored / "README.md").read_text()


def test_a_corrupted_bank_is_never_published(run_push, tmp_path, tokenizer):
    tiny_lychee().compress(document_ids(tokenizer, 100)).save_pretrained(tmp_path / "bank")
    block = tmp_path / "bank" / "shard-00000.safetensors"
    block.write_bytes(block.read_bytes()[:-10] + b"0123456789")
    with FakeHub(tmp_path / "hub") as hub:
        code, _, err = run_push(str(tmp_path / "bank"), "--repo-id", "me/bad-bank", endpoint=hub.endpoint)
    assert code == 2 and "corrupted" in err and hub.requests == []


def test_repo_id_needs_an_owner(run_push, checkpoint):
    code, _, err = run_push(str(checkpoint), "--repo-id", "noowner", "--dry-run")
    assert code == 2 and "ORG/NAME" in err


def test_model_card_describes_the_gate_policy():
    from lychee_hf.model_card import render_model_card

    config = tiny_lychee(
        gate_type="query_likelihood", gate_reads_memory=True, gate_revisit=True, gate_threshold=0.4
    ).config
    card = render_model_card(config)
    assert (
        "| gate | query_likelihood (threshold 0.4, reads the working memory, second look at skipped blocks) |" in card
    )
    assert "| gate | always_related (threshold 0.5) |" in render_model_card(tiny_lychee().config)


def test_model_card_has_training_and_limitations_sections(run_push, checkpoint, tmp_path):
    import shutil

    from lychee_hf.default_model import SHIPPED_WEIGHTS
    from lychee_hf.model_card import render_model_card

    config = tiny_lychee().config
    card = render_model_card(config, training=SHIPPED_WEIGHTS / "training.json")
    training = card[card.index("## Training") : card.index("## Limitations")]
    assert "| reasoner sft |" in training and "optimizer steps: 160" in training
    assert "examples/train_default_model.py" in training and "Notes: " in training
    assert "## Limitations\n\n- " in card
    bare = render_model_card(config, training=tmp_path / "no-such-folder")
    assert "## Training\n\nNo training record" in bare and "## Limitations\n\n- " in bare
    own = render_model_card(config, training={"date": "2026-12-07", "limitations": ["Reads English only."]})
    assert "## Limitations\n\n- Reads English only." in own and "(2026-12-07)" in own

    shutil.copy(SHIPPED_WEIGHTS / "training.json", checkpoint / "training.json")  # push reads the folder's record
    with FakeHub(tmp_path / "hub") as hub:
        code, out, err = run_push(
            str(checkpoint), "--repo-id", "me/x", "--dry-run", "--no-check", endpoint=hub.endpoint
        )
    assert code == 0 and hub.requests == [], err
    assert "| reasoner sft |" in out and "## Limitations" in out
