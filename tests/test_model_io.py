"""The one way into the model, and a model-driven agent that has nothing but its observation.

- A plain ``mirrorhall_v0.parallel_env`` loop with 8 agents, every one driven by the reference
  model from its own PettingZoo observation and prompt (``ObservationActor``), gives the
  probabilities of the acting path over the world state (``ModelPolicy``) to 1e-6.
- Incremental acting equals the batch computation training and probes use.
- Prompts are encoded and checked in one place.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mirrorhall.agents.cast import sample_actions
from mirrorhall.envs import mirrorhall_v0
from mirrorhall.envs.core import WorldCore
from mirrorhall.envs.perception import entity_features, gem_sightings, look
from mirrorhall.errors import CheckpointError, ConfigError
from mirrorhall.imitation.checkpoint import load_model
from mirrorhall.imitation.model import MultiPolicyModel
from mirrorhall.imitation.model_io import (
    ObservationActor,
    check_compatible,
    encode_prompts,
    gather_inputs,
)
from mirrorhall.imitation.policy import ModelPolicy

REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"
PROMPTS = ["behave as yourself", "behave as agent 2", "behave as agent 5", "pretend to be agent 1 pretending to be you",
           "behave as yourself", "behave as agent 0", "collect 3 red gems", "behave as agent 7"]


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return load_model(REFERENCE)


@pytest.fixture(scope="module", params=["reference", "recency", "recency+place", "recency+perspective",
                                        "recency+pickups"])
def either(request, reference):
    """The reference, a model with recency-weighted evidence (decaying memory rows), one that also
    reads the place columns (of the default 11 x 11 world), one that reads the perspective
    columns (each observer's estimate of what every agent saw, kept from step to step), and one
    that reads the pickup columns (what each observer saw of the gems a step before), each
    holding the reference's weights wherever the shapes agree: acting and batch paths must agree
    for all."""
    model, tokenizer, meta = reference
    if request.param == "reference":
        return reference
    torch.manual_seed(0)
    place = (11, 11) if "place" in request.param else ()
    perspective, pickups = "perspective" in request.param, "pickups" in request.param
    recent = MultiPolicyModel(replace(model.config, recency=(1.5, 6.0), place=place, perspective=perspective,
                                      pickups=pickups)).eval()
    own = recent.state_dict()
    recent.load_state_dict({k: v if v.shape == own[k].shape else own[k] for k, v in model.state_dict().items()})
    return recent, tokenizer, meta


@pytest.mark.parametrize("view_radius", [None, 3])
def test_plain_parallel_env_driven_from_observations_alone(either, view_radius):
    """8 agents of a plain ParallelEnv, each acting on the model's distribution computed from its
    own observation and prompt only, against ``ModelPolicy`` on the true state (1e-6).

    Under partial view the reference counts agent j's step t-1 for observer i only when j is
    visible to i at t-1 and at t: j's action of t-1 is in i's observation only then.
    """
    model, tokenizer, _ = either
    env = mirrorhall_v0.parallel_env(n_agents=8, view_radius=view_radius, max_cycles=40)
    actor = ObservationActor(model, tokenizer, env.config, PROMPTS)
    policy = ModelPolicy(model, tokenizer, WorldCore(env.config), range(8))
    mstate = policy.initial_state(1, PROMPTS)
    obs, _ = env.reset(seed=11)
    rng = np.random.default_rng(11)
    state, worst, spread = None, 0.0, 0.0
    for t in range(40):
        flat = np.stack([obs[a] for a in env.agents])  # (8, obs_dim): all the actor ever reads
        got, state = actor.probs(flat, state)  # (8, 5)
        mstate = policy.look(mstate, env.world_state)
        feats, vis = policy.features(env.world_state, mstate)
        want = policy.probs(mstate, feats, vis)[0]
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=f"step {t}")
        worst = max(worst, float(np.abs(got - want).max()))
        spread = max(spread, float(np.abs(want - 0.2).max()))
        actions = sample_actions(got[None], rng)  # (1, 8)
        obs, _, terms, truncs, _ = env.step({a: int(x) for a, x in zip(env.agents, actions[0], strict=True)})
        _, vis_next = policy.features(env.world_state)
        mstate = policy.observe(mstate, feats, vis & vis_next, actions)
        if all(truncs.values()):
            break
    assert t == 39 and spread > 0.05, "uniform distributions would make the comparison vacuous"
    assert worst < 1e-6


def test_incremental_acting_equals_the_batch_inputs_of_training_and_probes(either):
    """``ModelPolicy`` step by step == ``gather_inputs`` over the whole recorded history."""
    model, tokenizer, _ = either
    env = mirrorhall_v0.parallel_env(n_agents=6, view_radius=2, max_cycles=15)
    core = WorldCore(env.config)
    policy = ModelPolicy(model, tokenizer, core, range(6))
    texts = PROMPTS[:6]
    mstate = policy.initial_state(1, texts)
    env.reset(seed=4)
    rng = np.random.default_rng(4)
    feats_all, vis_all, acts, step_probs = [], [], [], []
    belief = seen = None
    before = np.zeros((1, 6, env.config.n_colors, env.config.height * env.config.width), dtype=bool)
    for _ in range(12):
        if model.config.perspective:
            belief = look(core, env.world_state, memory=belief)
        if model.config.pickups:
            before = before if seen is None else seen
            seen = gem_sightings(core, env.world_state)
        mstate = policy.look(mstate, env.world_state)
        f, v = entity_features(core, env.world_state, place=bool(model.config.place), belief=belief,
                               before=before if model.config.pickups else None)  # (1, N, N, 5, F)
        feats_all.append(f[0])
        vis_all.append(v[0])
        p = policy.probs(mstate, f, v)[0]
        step_probs.append(p)
        a = sample_actions(p[None], rng)
        acts.append(a[0])
        mstate = policy.observe(mstate, f, v, a)
        env.step({ag: int(x) for ag, x in zip(env.agents, a[0], strict=True)})
    tt = len(acts)
    feats = torch.from_numpy(np.stack(feats_all)[None])  # (1, T, N, N, 5, F)
    vis = torch.from_numpy(np.stack(vis_all)[None])
    actions = torch.from_numpy(np.stack(acts)[None, :-1])  # (1, T - 1, N)
    t = torch.arange(tt).repeat_interleave(6)
    agent = torch.arange(6).repeat(tt)
    tokens = encode_prompts(tokenizer, [texts[i] for i in agent.tolist()], model.config.max_prompt_len)
    with torch.no_grad():
        logits = model(**gather_inputs(model, feats, vis, actions, torch.zeros_like(t), t, agent, tokens))
    batch = torch.softmax(logits.double(), -1).numpy().reshape(tt, 6, 5)
    np.testing.assert_allclose(batch, np.stack(step_probs), atol=1e-6, rtol=0)


def test_prompts_are_encoded_padded_and_checked_once(reference):
    model, tokenizer, _ = reference
    tokens = encode_prompts(tokenizer, ["behave as agent 3", "behave as yourself", "behave as agent 3"], 24, n_agents=4)
    assert tokens.shape[:2] == (3, 24) and tokens.dtype == torch.long  # (3, 24, W) with an n-gram tokenizer
    word_ids = tokens if tokens.dim() == 2 else tokens[..., 0]
    assert torch.equal(tokens[0], tokens[2]) and (tokens[1, 3:] == 0).all() and (word_ids[0, :4] != 0).all()
    with pytest.raises(ConfigError, match="names agent 9"):
        encode_prompts(tokenizer, ["behave as agent 9"], 24, n_agents=4)
    with pytest.raises(ConfigError, match="non-empty"):
        encode_prompts(tokenizer, ["  "], 24, n_agents=4)


def test_the_model_refuses_worlds_it_cannot_read(reference):
    model, tokenizer, _ = reference
    with pytest.raises(CheckpointError, match="colours"):
        check_compatible(model.config, mirrorhall_v0.parallel_env(n_agents=3, n_colors=3).config)
    with pytest.raises(CheckpointError, match="at most"):
        check_compatible(model.config, mirrorhall_v0.parallel_env(n_agents=model.config.max_agents + 1,
                                                                 width=20, height=20).config)
    placed = replace(model.config, place=(11, 11))
    check_compatible(placed, mirrorhall_v0.parallel_env(n_agents=3).config)
    with pytest.raises(CheckpointError, match=r"places of a 11 x 11 grid .* 9 x 13; use --height 11 --width 11"):
        check_compatible(placed, mirrorhall_v0.parallel_env(n_agents=3, width=13, height=9).config)
    with pytest.raises(ConfigError, match="one prompt per agent"):
        ObservationActor(model, tokenizer, mirrorhall_v0.parallel_env(n_agents=3).config, ["behave as yourself"])
