"""End-to-end GRPO: episodes from the model's own loop, exact log-probs, gradients into reasoner and compressor."""

import pytest
import torch
from transformers import TrainerCallback

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.modeling.adapters_lychee import role_adapter
from lychee_hf.modeling.compat_lychee import cache_kwargs, output_cache
from lychee_hf.modeling.prefix_lychee import block_prefix
from lychee_hf.testing import document_ids, tiny_lychee
from lychee_hf.training.compressor import compressed_blocks
from lychee_hf.training.curriculum import check_disjoint_seeds, curriculum_examples
from lychee_hf.training.rewards import episode_rewards
from lychee_hf.training.rl_config import LycheeGRPOConfig
from lychee_hf.training.rl_loss import assign_advantages, episode_logprobs, grpo_loss, recompute_blocks
from lychee_hf.training.rl_trainer import prepare_for_rl, train_rl
from lychee_hf.training.rollout import Episode, RolloutGroup, evaluate_policy, sample_group

pytest.importorskip("peft")

SMALL = dict(
    compression_mode="memory_tokens", gate_type="always_related", chunk_size=32, compression_window=32, memory_budget=4
)


def config(tmp_path, **overrides) -> LycheeGRPOConfig:
    settings = dict(output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=4, disable_tqdm=True)
    settings.update(overrides)
    return LycheeGRPOConfig(**settings)


def answer_length_reward(completions, answers, **kwargs):
    """A toy reward with spread in every group: longer answers score more."""
    return [len(text) / 10 for text in completions]


@pytest.fixture(scope="module")
def examples(tokenizer):
    return curriculum_examples(tokenizer, ["niah"], [90], 4)


# ----------------------------------------------------------------------------------------------- config and data
def test_config_counts_episodes_per_batch_as_trl_does(tmp_path):
    with pytest.raises(ValueError, match="multiple of num_generations"):
        config(tmp_path, per_device_train_batch_size=6)
    assert config(tmp_path, per_device_train_batch_size=8).questions_per_device == 2


@pytest.mark.parametrize(
    "field, value", [("loss_type", "ppo"), ("scale_rewards", "yes"), ("reward", "bleu"), ("num_generations", 1)]
)
def test_config_refuses_unknown_settings_by_name(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        config(tmp_path, **{field: value, "per_device_train_batch_size": 4 if field != "num_generations" else 1})


def test_curriculum_goes_shortest_first_with_a_new_seed_per_stage(tokenizer):
    rows = curriculum_examples(tokenizer, ["niah", "vt"], [300, 600], 2, seed=1000)
    assert [row.length_tokens > 450 for row in rows] == [False] * 4 + [True] * 4
    assert {row.task for row in rows[:4]} == {"niah", "vt"}
    assert {row.answers[0] for row in rows[:4]}.isdisjoint({row.answers[0] for row in rows[4:]})


def test_training_seeds_never_include_the_held_out_seed():
    check_disjoint_seeds(1000, 3, held_out_seed=0)
    with pytest.raises(ValueError, match="held-out seed 1001"):
        check_disjoint_seeds(1000, 3, held_out_seed=1001)


@pytest.mark.parametrize("task", ["facts-heldout", "facts-rephrased", "twohop-heldout"])
def test_curriculum_refuses_held_out_families_and_phrasings(tokenizer, task):
    with pytest.raises(ValueError, match=f"\\['{task}'\\] are held out.*Train on .*twohop"):
        curriculum_examples(tokenizer, ["facts", task], [300], 1)


def test_curriculum_rows_differ_from_held_out_rows(tokenizer):
    held_out = {row.context for row in curriculum_examples(tokenizer, ["niah"], [80], 4, seed=0)}
    assert held_out.isdisjoint(row.context for row in curriculum_examples(tokenizer, ["niah"], [80], 4, seed=1000))


# ----------------------------------------------------------------------------------------------- rewards and loss
def test_rule_reward_is_sub_em_plus_format_term(tmp_path):
    settings = config(tmp_path, format_reward=0.5)
    rewards = episode_rewards(["it is 42", "no idea", ""], [True, False, True], ["42"], settings)
    assert rewards == [1.5, 0.0, 0.0]


def test_advantages_are_normalised_within_each_group():
    groups = [
        RolloutGroup(None, None, [Episode([], "", r) for r in rewards]) for rewards in ([1, 0, 0, 1], [0, 0, 0, 0])
    ]
    assign_advantages(groups, "group")
    first = [e.advantage for e in groups[0].episodes]
    assert first[0] == pytest.approx(-first[1]) and first[0] == pytest.approx(0.5 / (0.57735 + 1e-4), rel=1e-4)
    assert [e.advantage for e in groups[1].episodes] == [0.0] * 4


def test_grpo_loss_gradient_is_the_advantage_weighted_score(tmp_path):
    logprobs = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    episodes = [[logprobs[:2]], [logprobs[2:]]]
    loss, stats = grpo_loss(episodes, [2.0, -1.0], config(tmp_path, loss_type="dapo"))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-(2 + 2 - 1) / 3) and stats["clip_ratio"] == 0.0
    assert logprobs.grad.tolist() == pytest.approx([-2 / 3, -2 / 3, 1 / 3])


def test_grpo_loss_type_averages_per_episode_first(tmp_path):
    logprobs = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    loss, _ = grpo_loss([[logprobs[:2]], [logprobs[2:]]], [2.0, -1.0], config(tmp_path, loss_type="grpo"))
    loss.backward()
    assert logprobs.grad.tolist() == pytest.approx([-0.5, -0.5, 0.5])


# ----------------------------------------------------------------------------------------------- episodes
@pytest.fixture(scope="module")
def group(tokenizer, examples, tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_lychee(**SMALL)
    settings = config(tmp_path_factory.mktemp("rl"))
    return model, sample_group(model, tokenizer, examples[0], settings, [answer_length_reward]), settings


def test_an_episode_is_every_kept_block_update_then_the_final_answer(group):
    model, rollouts, _ = group
    blocks = -(-rollouts.context_ids.numel() // model.config.chunk_size)
    for episode in rollouts.episodes:
        assert [turn.block_index for turn in episode.turns] == [*range(blocks), None]
        assert all(turn.completion_ids.numel() >= 1 for turn in episode.turns)
    assert len(rollouts.episodes) == 4


def test_episode_prompts_are_the_prompts_the_loop_fed_to_generate(tokenizer, examples, tmp_path, monkeypatch):
    """RL reads every turn's prompt from the trace: a prompt changed in the loop reaches training as it is."""
    from lychee_hf.modeling import reasoner_lychee

    marker, original = 7, reasoner_lychee.build_prompt

    def marked_prompt(pieces, question, memory):
        prompt = original(pieces, question, memory)
        return torch.cat([prompt, prompt.new_tensor([marker])])

    monkeypatch.setattr(reasoner_lychee, "build_prompt", marked_prompt)
    torch.manual_seed(0)
    model = tiny_lychee(**SMALL)
    rollouts = sample_group(model, tokenizer, examples[0], config(tmp_path), [answer_length_reward])
    turns = [turn for episode in rollouts.episodes for turn in episode.turns]
    assert len(turns) > len(rollouts.episodes) and all(int(turn.prompt_ids[-1]) == marker for turn in turns)


def _incremental_logprobs(model, turn, block, temperature: float) -> torch.Tensor:
    """The completion's log-probs as decoding saw them: prefill [block, prompt] through a cache, then one token at
    a time (an independent path from the trainer's single teacher-forced forward)."""
    prompt = turn.prompt_ids[None]
    mask = torch.ones_like(prompt)
    if block is not None:
        prefix = block_prefix(model, [block])
        inputs = prefix.forward_inputs(mask)
        cache, attention, positions = prefix.cache, inputs["attention_mask"], inputs["position_ids"]
    else:
        cache, attention, positions = None, mask, torch.arange(prompt.shape[1])[None]
    out = model(
        input_ids=prompt, attention_mask=attention, position_ids=positions, use_cache=True, **cache_kwargs(cache)
    )
    logprobs = []
    for token in turn.completion_ids:
        logprobs.append(torch.log_softmax(out.logits[0, -1] / temperature, -1)[token])
        attention = torch.cat([attention, torch.ones(1, 1, dtype=attention.dtype)], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=token.view(1, 1),
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            **cache_kwargs(output_cache(out)),
        )
    return torch.stack(logprobs)


def test_training_logprobs_equal_fresh_decoding_under_gradient_checkpointing(group):
    model, rollouts, settings = group
    prepare_for_rl(model, settings)
    model.activation_checkpointing_enable()
    model.train()
    try:
        blocks = recompute_blocks(model, rollouts.context_ids, rollouts.kept_blocks(), grad=True)
        trained = episode_logprobs(model, rollouts, blocks, settings)
    finally:
        model.activation_checkpointing_disable()
        model.eval()
    assert trained[0][0].requires_grad
    with torch.no_grad():
        for episode, episode_logps in zip(rollouts.episodes, trained):
            for turn, logps in zip(episode.turns, episode_logps):
                block = blocks[turn.block_index] if turn.block_index is not None else None
                with torch.no_grad():
                    fresh = _incremental_logprobs(model, turn, block, settings.temperature)
                torch.testing.assert_close(logps.detach(), fresh, rtol=0, atol=2e-5)


@pytest.mark.parametrize("scheme", ["reference", "sequential"])
def test_block_prefix_and_role_adapters_survive_gradient_checkpointing(tokenizer, tmp_path, scheme):
    """Same logits and gradients with checkpointing on: the block prefix is not dropped, and the compression pass
    is recomputed in backward as the compressor (reasoner adapter off), not as the reasoner."""
    model = tiny_lychee(compression_mode="memory_tokens", position_scheme=scheme)
    prepare_for_rl(model, config(tmp_path))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)  # an adapter that changes the outputs, as a trained one would
    chunk, prompt = document_ids(tokenizer, 64), document_ids(tokenizer, 10, seed=3)
    model.train()
    results = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        with role_adapter(model, "reasoner"):
            logits = model(input_ids=prompt, memory_blocks=compressed_blocks(model, chunk)).logits
        logits.pow(2).mean().backward()
        lora = next(p for name, p in model.named_parameters() if "lora_A" in name)
        results.append((logits.detach(), model.compressor.layers[0].k_proj.weight.grad.clone(), lora.grad.clone()))
    model.activation_checkpointing_disable()
    for plain, checkpointed in zip(*results):
        assert plain.abs().max() > 0 and torch.equal(plain, checkpointed)


def test_reentrant_checkpointing_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="use_reentrant"):
        tiny_lychee().activation_checkpointing_enable({"use_reentrant": True})


def test_one_step_raises_the_likelihood_of_better_episodes(group):
    """First-order check of the policy gradient: after a small step, sum_i A_i * delta log p(episode i) > 0."""
    model, rollouts, settings = group
    prepare_for_rl(model, settings)
    assign_advantages([rollouts])
    advantages = [e.advantage for e in rollouts.episodes]
    assert any(advantages)

    def totals():
        blocks = recompute_blocks(model, rollouts.context_ids, rollouts.kept_blocks(), grad=True)
        logprobs = episode_logprobs(model, rollouts, blocks, settings)
        return logprobs, [float(torch.cat(turns).sum()) for turns in logprobs]

    logprobs, before = totals()
    grpo_loss(logprobs, advantages, settings)[0].backward()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter -= 1e-2 * parameter.grad
                parameter.grad = None
    _, after = totals()
    assert sum(a * (new - old) for a, new, old in zip(advantages, after, before)) > 0


# ----------------------------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def trained(tokenizer, examples, tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_lychee(**SMALL)
    settings = config(
        tmp_path_factory.mktemp("trainer"), learning_rate=5e-3, max_steps=3, seed=0, activation_checkpointing=True
    )
    prepare_for_rl(model, settings)  # the reasoner adapter exists before: train_rl trains it further
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = train_rl(model, tokenizer, examples, settings, reward_funcs=[answer_length_reward])
    return model, before, result


def test_training_logs_rewards_and_the_loss_every_step(trained):
    _, _, result = trained
    logs = [entry for entry in result.trainer.state.log_history if "reward" in entry]
    assert len(logs) == 3
    assert all({"loss", "reward", "reward_std", "turns", "clip_ratio", "grad_norm"} <= set(entry) for entry in logs)
    assert all(entry["grad_norm"] > 0 for entry in logs)


def test_rl_changes_every_reasoner_and_compressor_weight_and_nothing_else(trained):
    model, before, _ = trained
    # The last layer's memory queries feed no exported K/V (only memory K/V leave the compressor): no gradient.
    dead = f"compressor.layers.{len(model.compressor.layers) - 1}.q_proj."
    reasoner = [name for name in before if ".reasoner." in name]
    assert reasoner and all("lora_" in name for name in reasoner)
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        trainable = ".reasoner." in name or (name.startswith("compressor.") and not name.startswith(dead))
        assert changed == trainable, name


def test_rl_checkpoint_reloads_in_peft_layout_with_the_same_outputs(trained, tokenizer, tmp_path):
    model, _, _ = trained
    model.save_pretrained(tmp_path)
    assert (tmp_path / "reasoner" / "adapter_config.json").is_file()
    assert (tmp_path / "reasoner" / "adapter_model.safetensors").is_file()
    reloaded = LycheeMemoryForCausalLM.from_pretrained(tmp_path)
    context, question = document_ids(tokenizer, 90), document_ids(tokenizer, 6, seed=2)
    first = model.generate(input_ids=question, context_ids=context, do_sample=False)
    second = reloaded.generate(input_ids=question, context_ids=context, do_sample=False)
    assert torch.equal(first, second)


def test_rl_with_kl_logs_a_non_negative_divergence(tokenizer, examples, tmp_path):
    model = tiny_lychee(**SMALL)
    settings = config(tmp_path, learning_rate=5e-3, max_steps=2, beta=0.1, train_compressor=False)
    result = train_rl(model, tokenizer, examples, settings, reward_funcs=[answer_length_reward])
    kls = [entry["kl"] for entry in result.trainer.state.log_history if "kl" in entry]
    assert len(kls) == 2 and kls[0] == 0.0 and kls[1] > 0  # the adapter starts equal to the reference
    assert all(not p.requires_grad for name, p in model.named_parameters() if name.startswith("compressor."))


def test_evaluate_policy_reports_the_mean_sampled_reward_per_task(tokenizer, examples, tmp_path):
    model = tiny_lychee(**SMALL)
    result = evaluate_policy(model, tokenizer, examples[:2], config(tmp_path, reward="f1"))
    assert result["n"] == 2 and set(result) == {"reward", "n", "reward/niah"}
    assert 0.0 <= result["reward"] <= 1.0 and not model.training


def test_reward_rises_on_a_learnable_toy_task(tokenizer, tmp_path):
    """A bandit-like toy: one-token answers, rewarded when they start with a-m (about half the tokens)."""
    torch.manual_seed(0)
    model = tiny_lychee(**{**SMALL, "memory_budget": 1, "max_answer_tokens": 1})
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # a random init's logits hardly depend on the hidden state; a trained LM's do

    def first_half_of_the_alphabet(completions, answers, **kwargs):
        return [float(bool(text) and text[0].lower() in "abcdefghijklm") for text in completions]

    examples = curriculum_examples(tokenizer, ["niah"], [60], 16, seed=1000)
    settings = config(tmp_path, num_generations=8, per_device_train_batch_size=8, learning_rate=1e-3, seed=0)
    result = train_rl(model, tokenizer, examples, settings, reward_funcs=[first_half_of_the_alphabet])
    logs = [entry for entry in result.trainer.state.log_history if "reward" in entry]
    rewards = [entry["reward"] for entry in logs]
    assert len(rewards) == 16 and all("loss" in entry for entry in logs)
    assert sum(rewards[-5:]) / 5 >= 0.9 and sum(rewards[-5:]) / 5 > sum(rewards[:3]) / 3 + 0.2


# ----------------------------------------------------------------------------------------------- resuming
class StopAfter(TrainerCallback):
    """Interrupts a run after `steps` steps, as a stopped job would be (the checkpoint of that step exists)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.steps:
            control.should_training_stop = True


def resumable_run(tokenizer, examples, out, callbacks=None, resume=None):
    torch.manual_seed(0)
    model = tiny_lychee(**SMALL)
    settings = config(
        out, learning_rate=5e-3, max_steps=3, seed=0, save_strategy="steps", save_steps=1, logging_steps=1
    )
    result = train_rl(
        model,
        tokenizer,
        examples,
        settings,
        reward_funcs=[answer_length_reward],
        callbacks=callbacks,
        resume_from_checkpoint=resume,
    )
    return model, result


def test_a_resumed_run_ends_with_the_weights_of_one_uninterrupted_run(tokenizer, examples, tmp_path):
    whole, whole_result = resumable_run(tokenizer, examples, tmp_path / "whole")
    resumable_run(tokenizer, examples, tmp_path / "cut", callbacks=[StopAfter(2)])
    resumed, resumed_result = resumable_run(tokenizer, examples, tmp_path / "cut", resume=True)
    assert resumed_result.trainer.state.global_step == 3
    for (name, expected), (_, got) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert torch.equal(expected, got), name
    rewards = [
        [e["reward"] for e in r.trainer.state.log_history if "reward" in e] for r in (whole_result, resumed_result)
    ]
    assert rewards[0] == rewards[1] and len(rewards[0]) == 3


def test_resuming_without_a_checkpoint_names_the_folder_and_the_fix(tokenizer, examples, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step> folder.*save_strategy='steps'"):
        resumable_run(tokenizer, examples, tmp_path / "empty", resume=True)
