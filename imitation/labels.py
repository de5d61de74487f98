"""Hindsight labelling with oracle queries: exact soft targets for (agent i, time t, prompt g).

One shard is B episodes run together on the batched core. At every step each agent receives
``prompts_per_step`` prompts; each label is the exact distribution of the action asked for:

- SELF        pi_i(. | s_i,t)
- DESCRIBE(h) pi_h(. | s_i,t), h a trait combination of the population (held-out ones excluded);
              in a population with persona families (``lab-families``, ``lab-minus-<family>``) h may
              also be a persona of a family of the training split, from that family's grid (below)
              and, with ``describe_follow``, that share of DESCRIBE labels describes a trait persona
              that follows a named agent ("... and follows agent 3"; never the agent asked), whatever
              the population's own social terms
- OTHER(k)    what agent k, with its internal state at t, would do in i's situation (i's view,
              and for a believer i's memory: a situation is what i knows of the world, so k acts on
              it with k's preferences, as a described believer does)
- SECOND(k)   what Imitator(k -> i) would do in i's situation: k's fidelity f (1 for agents that
              are not imitators), k's current Bayes belief about i (from what k has seen of i), and
              k's own policy (an imitator's own trait) for the remaining 1 - f
- RETURN      the action i actually took, with the prompt built from the gems it actually
              collected in the next 10 or 20 steps (only where the episode lasts that long; other
              RETURN draws become SELF)

Described family personas. A family persona has a state (a patrol's next waypoint, a collector's
wanted colour, an explorer's trail). Described to agent i, it has the state it would have had if it
had lived i's own history so far: ``families.look`` on i's cell at every step and on the gem i
collected in the step before, from the first step, exactly as the persona itself takes in its own
(so a described collector has collected what i collected; a described patrol has reached the
waypoints i stood on, in order; a described explorer avoids the cells i stood on). Stateless
families (territorial, contrarian) need none. A description is drawn by the population's mix: the
trait descriptions together with the weight of the trait kinds (trait, believer, memoryless), each
family with its own weight, uniform within each; a contrarian is never described to its own
target. Populations without families draw and label exactly as before.

The episodes are run by ``agents/scene.py`` ``run_scene``, the one rollout loop; ``Labeller`` is
its ``on_act`` hook. Randomness: one SeedSequence per shard, spawned into personas, world, policy
and prompt streams, so a shard's bytes depend only on the generator config and the shard index;
``run_scene`` draws from the world and policy streams, the labeller from the prompt stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import HypothesisSet, believer_probs, softmax
from mirrorhall.agents.cast import IMITATOR, Cast, persona_probs, trait_probs
from mirrorhall.agents.families import DescribedFamilies, family_grid
from mirrorhall.agents.personas import Believer, Memoryless, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import Episode as SceneEpisode
from mirrorhall.agents.scene import SceneStep, run_scene
from mirrorhall.envs.core import ANY_COLOR, WorldConfig
from mirrorhall.imitation.prompts import (
    RETURN_HORIZONS,
    TEMPLATES,
    Kind,
    PromptSpace,
    render,
    sample_surface,
)


@dataclass
class LabelledShard:
    """The arrays of one shard: B episodes and their samples (flat over the shard)."""

    personas: list  # (B,) tuples of N persona specs
    persona_held_out: np.ndarray  # (B, N) bool: a trait combination held out of training
    agent_pos: np.ndarray  # (T + 1, B, N, 2)
    gem_pos: np.ndarray  # (T + 1, B, G, 2)
    actions: np.ndarray  # (T, B, N)
    valued: np.ndarray  # (B, N)
    # samples, S of them
    world: np.ndarray  # (S,) episode index within the shard
    agent: np.ndarray  # (S,)
    t: np.ndarray  # (S,) the step whose action is asked for (observations up to t are known)
    kind: np.ndarray  # (S,) Kind
    target: np.ndarray  # (S,) k for OTHER / SECOND, -1 otherwise
    template: np.ndarray  # (S,)
    prompt: list  # (S,) texts
    prompt_held_out: np.ndarray  # (S,) bool
    label: np.ndarray  # (S, 5) float32 exact distributions
    events: list | None = None  # (B,) each episode's interventions (tuples of WorldEvent); None: none


def shard_seeds(seed: int, shard: int) -> list[np.random.Generator]:
    """Generators (personas, world, policy, prompts) of one shard."""
    return [streams.rng(s, seed, shard)
            for s in (streams.SHARD_PERSONAS, streams.SHARD_WORLD, streams.SHARD_POLICY, streams.SHARD_PROMPTS)]


def label_shard(cfg, shard: int, n_episodes: int) -> LabelledShard:
    """Run ``n_episodes`` episodes of shard ``shard`` and label them. ``cfg``: GenerateConfig.

    The episodes are run by ``run_scene``; ``Labeller`` labels each step through its ``on_act``
    hook.
    """
    world_cfg = cfg.world()
    pop = get_population(cfg.population)
    n, c = world_cfg.n_agents, world_cfg.n_colors
    rng_personas, rng_world, rng_policy, rng_prompt = shard_seeds(cfg.seed, shard)
    rows = [pop.sample_scene(n, c, rng_personas, split="train", world=world_cfg) for _ in range(n_episodes)]
    events = None
    if pop.swap_rate > 0:  # a stream of its own: populations without events draw exactly as before
        rng_events = streams.rng(streams.SHARD_EVENTS, cfg.seed, shard)
        events = [pop.sample_events(world_cfg, cfg.steps, rng_events) for _ in range(n_episodes)]
    hyp = pop.hypotheses(c, n)
    labeller = Labeller(cfg, n_episodes, hyp, rng_prompt)
    episode = run_scene(world_cfg, rows, cfg.steps, cfg.seed, hypotheses=hyp, on_act=labeller,
                        generators=(rng_world, rng_policy), events=events, remember=pop.remembers)
    return labeller.result(episode)


class Labeller:
    """The ``on_act`` hook of ``run_scene`` that labels B episodes: at every step each agent
    receives ``prompts_per_step`` prompts, labelled from the step's situations, cast state and
    action probabilities; ``result`` turns what it gathered into a ``LabelledShard``.

    Its only randomness is ``rng_prompt`` (kinds, targets, described traits, RETURN horizons and
    colours, templates), drawn in a fixed order at every step.
    """

    def __init__(self, cfg, n_episodes: int, hyp: HypothesisSet, rng_prompt: np.random.Generator):
        self.world_cfg = cfg.world()
        self.pop = get_population(cfg.population)
        self.steps = cfg.steps
        self.varied_share = cfg.varied_share
        self.hyp = hyp
        self.rng = rng_prompt
        b, n, c = n_episodes, self.world_cfg.n_agents, self.world_cfg.n_colors
        self.b, self.n, self.m = b, n, cfg.prompts_per_step
        # pair beliefs: (B, observer k, target i, H) what k has learned about i so far
        self.pair = np.broadcast_to(hyp.log_prior, (b, n, n, len(hyp))).copy()
        self.desc_traits = [Trait(*combo) for combo in self.pop.combos(c, "train") if combo[1] != "follow"]
        if self.pop.remembers:  # believers and their control can be described too
            self.desc_traits += [cls(*combo) for cls in (Believer, Memoryless)
                                 for combo in self.pop.viewer_combos(c, "train")]
        self.desc_believer = np.array([isinstance(d, Believer) for d in self.desc_traits])
        self.desc_hyp = HypothesisSet([getattr(d, "trait", d) for d in self.desc_traits], c, n)  # their trait codes
        self.n_trait_desc = len(self.desc_traits)
        self.family_desc = None
        if self.pop.families("train"):
            self.family_desc = FamilyDescriptions(self.pop, self.world_cfg, self.n_trait_desc, b)
            self.desc_traits = self.desc_traits + self.family_desc.specs
        # followers described by name (cfg.describe_follow), after every other description: one
        # per (likes, style) of the training combinations and followed agent
        self.describe_follow = cfg.describe_follow if n > 1 else 0.0
        self.n_follow_start = len(self.desc_traits)
        follow = sorted({(lk, st) for lk, _, st in self.pop.combos(c, "train")}, key=str)
        self.follow_hyp = None
        if self.describe_follow > 0:
            follow_traits = [Trait(lk, "follow", st, follow=k) for lk, st in follow for k in range(n)]
            self.desc_traits = self.desc_traits + follow_traits
            self.follow_hyp = HypothesisSet(follow_traits, c, n)
        self.n_follow_combos = len(follow)
        kinds_p = np.asarray(cfg.kind_weights, dtype=np.float64)
        self.kinds_p = kinds_p / kinds_p.sum()
        self.wi = np.broadcast_to(np.arange(b)[:, None, None], (b, n, self.m))
        self.ai = np.broadcast_to(np.arange(n)[None, :, None], (b, n, self.m))
        self.coll_hist = []  # (B, N, C) gems collected before each step
        self.out = {k: [] for k in ("world", "agent", "t", "kind", "target", "template", "surface", "label", "aux")}

    def __call__(self, step: SceneStep) -> None:
        b, n, m, steps, t = self.b, self.n, self.m, self.steps, step.t
        rng_prompt, wi, ai = self.rng, self.wi, self.ai
        cast, sit, cstate, probs, action = step.cast, step.situations, step.cast_state, step.probs, step.actions
        c = self.world_cfg.n_colors
        is_imit = cast.params.kind == IMITATOR  # (B, N)
        fidelity = np.where(is_imit, cast.params.fidelity, 1.0)  # (B, N)
        own_params = cast.params  # imitators' own trait sits in likes/social/beta
        self.coll_hist.append(step.state.collected.copy())
        if self.family_desc is not None:  # the described family personas take in every agent's step
            self.family_desc.described.look(step.state, t)

        hprobs = self.hyp.probs(cast.bases(sit))  # (B, N, H, 5) every hypothesis in every agent's situation
        kind = rng_prompt.choice(len(Kind), size=(b, n, m), p=self.kinds_p)
        if n == 1:
            kind = np.where((kind == Kind.OTHER) | (kind == Kind.SECOND), Kind.SELF, kind)
        other = rng_prompt.integers(max(n - 1, 1), size=(b, n, m))
        other = other + (other >= ai)  # k != i
        other = np.where(n == 1, 0, other)
        if self.family_desc is None:
            desc = rng_prompt.integers(self.n_follow_start, size=(b, n, m))
        else:  # (B, N, M) drawn by the population's mix; the family ones after the trait ones
            desc = self.family_desc.draw(rng_prompt, ai)
        if self.describe_follow > 0:  # a stream of draws only where asked: other datasets draw as before
            fol = rng_prompt.random((b, n, m)) < self.describe_follow
            followed = rng_prompt.integers(n - 1, size=(b, n, m))
            followed = followed + (followed >= ai)  # never the agent asked
            combo = rng_prompt.integers(self.n_follow_combos, size=(b, n, m))
            desc = np.where(fol, self.n_follow_start + combo * n + followed, desc)
        horizon = np.asarray(RETURN_HORIZONS)[rng_prompt.integers(len(RETURN_HORIZONS), size=(b, n, m))]
        ret_color = rng_prompt.integers(-1, c, size=(b, n, m))  # -1: any colour
        kind = np.where((kind == Kind.RETURN) & (t + horizon > steps), Kind.SELF, kind)

        label = np.repeat(probs[:, :, None], m, axis=2)  # (B, N, M, 5) SELF
        sel = kind == Kind.DESCRIBE
        if self.follow_hyp is not None:
            fol = sel & (desc >= self.n_follow_start)
            sel = sel & ~fol
            if fol.any():
                h = desc[fol] - self.n_follow_start
                label[fol] = trait_probs(sit.take((wi[fol], ai[fol])), self.follow_hyp.likes[h],
                                         self.follow_hyp.social[h], self.follow_hyp.beta[h])
        if self.family_desc is not None:
            fam = sel & (desc >= self.n_trait_desc)
            sel = sel & ~fam
            if fam.any():
                wf, i_f, _ = np.nonzero(fam)
                label[fam] = self.family_desc.described.probs(desc[fam] - self.n_trait_desc, wf, i_f, sit,
                                                              step.state)
        if sel.any():
            h = desc[sel]
            label[sel] = trait_probs(sit.take((wi[sel], ai[sel])), self.desc_hyp.likes[h],
                                     self.desc_hyp.social[h], self.desc_hyp.beta[h])
            bel = self.desc_believer[h]
            if bel.any():  # a believer in i's situation remembers what i has seen
                wb, ib, mb = (x[bel] for x in np.nonzero(sel))
                hb = h[bel]
                label[wb, ib, mb] = believer_probs(
                    self.world_cfg, cast.bases(sit).take((wb, ib)), self.desc_hyp.likes[hb],
                    self.desc_hyp.social[hb], self.desc_hyp.beta[hb], cstate.memory[wb, ib], cstate.after[wb, ib])
        sel = kind == Kind.OTHER
        if sel.any():
            label[sel] = _persona_in(cast, sit, cstate, wi[sel], other[sel], ai[sel])
        sel = kind == Kind.SECOND
        if sel.any():
            k, i, w = other[sel], ai[sel], wi[sel]
            own = np.where(is_imit[w, k][:, None],
                           trait_probs(sit.take((w, i)), own_params.likes[w, k], own_params.social[w, k],
                                       own_params.beta[w, k]),
                           _persona_in(cast, sit, cstate, w, k, i))
            label[sel] = second_order_probs(fidelity[w, k], self.pair[w, k, i], hprobs[w, i], own)
        sel = kind == Kind.RETURN
        if sel.any():
            label[sel] = np.eye(5)[action[wi[sel], ai[sel]]]

        template = _templates(kind, rng_prompt)
        surface = sample_surface(rng_prompt, kind.shape)  # optional words, agent phrase, ids in words
        varied = rng_prompt.random(kind.shape) < self.varied_share  # the rest: the canonical wording
        template, surface = np.where(varied, template, 0), np.where(varied, surface, 0)
        named = (kind == Kind.OTHER) | (kind == Kind.SECOND)
        for key, arr in (("world", wi), ("agent", ai), ("t", np.full_like(kind, t)), ("kind", kind),
                         ("template", template), ("surface", surface), ("target", np.where(named, other, -1)),
                         ("label", label), ("aux", np.stack([desc, horizon, ret_color], axis=-1))):
            self.out[key].append(arr.reshape(b * n * m, *arr.shape[3:]))

        # pair beliefs: every observer k that sees i learns from i's (situation, action)
        ll = np.log(np.take_along_axis(hprobs, action[:, :, None, None], axis=-1)[..., 0])  # (B, N, H)
        seen = sit.agent_seen  # (B, observer, target)
        self.pair += np.where(seen[..., None], ll[:, None, :, :], 0.0)
        self.pair -= self.pair.max(-1, keepdims=True)

    def result(self, episode: SceneEpisode) -> LabelledShard:
        """The labelled shard of the scene ``episode`` that this hook watched."""
        flat = {k: np.concatenate(v) for k, v in self.out.items()}
        collected = np.stack([*self.coll_hist, episode.collected])  # (T + 1, B, N, C)
        prompts, held = _prompt_texts(flat, collected, self.desc_traits, self.world_cfg)
        rows = list(episode.personas)
        return LabelledShard(
            personas=rows,
            persona_held_out=np.array([[getattr(p, "combo", None) in self.pop.held_out for p in row]
                                       for row in rows]),
            agent_pos=episode.agent_pos, gem_pos=episode.gem_pos, actions=episode.actions,
            valued=np.full((self.b, self.n), ANY_COLOR),
            world=flat["world"], agent=flat["agent"], t=flat["t"], kind=flat["kind"],
            target=flat["target"], template=flat["template"], prompt=prompts, prompt_held_out=held,
            label=flat["label"].astype(np.float32),
            events=list(episode.events) if episode.events else None,
        )


class FamilyDescriptions:
    """The family personas DESCRIBE prompts name in a population with families, and their draws:
    each training family's grid (a contrarian with every target), after ``n_trait`` trait
    descriptions; their states in every agent's situation are ``described`` (B worlds)."""

    def __init__(self, pop, config: WorldConfig, n_trait: int, b: int):
        n = config.n_agents
        families = pop.families("train")
        self.specs = [spec for fam in families for spec in family_grid(fam, config)]
        self.described = DescribedFamilies(self.specs, config, b)
        # draw weights (N, D) over the trait descriptions, then the family ones: the trait kinds'
        # weight shared uniformly by the trait descriptions, each family's by its grid, where the
        # described persona is not a contrarian of the agent asked
        mix = dict(pop.mix)
        weight = np.zeros((n, n_trait + len(self.specs)))
        weight[:, :n_trait] = sum(mix.get(k, 0.0) for k in ("trait", "believer", "memoryless")) / n_trait
        kinds = np.array([s.kind for s in self.specs])
        target = np.array([getattr(s, "target", -1) for s in self.specs])
        for fam in families:
            allowed = (kinds == fam)[None, :] & (target[None, :] != np.arange(n)[:, None])  # (N, F)
            weight[:, n_trait:] += mix[fam] * allowed / allowed.sum(1, keepdims=True)
        self.cum = np.cumsum(weight, axis=1)  # (N, D)
        self.last = np.array([np.flatnonzero(row > 0)[-1] for row in weight])  # (N,) the last drawable

    def draw(self, rng: np.random.Generator, agent: np.ndarray) -> np.ndarray:
        """(B, N, M) description indices for the agents ``agent`` (B, N, M): one uniform draw each,
        by the inverse of the agent's cumulative weights."""
        u = rng.random(agent.shape)
        cum = self.cum[agent]  # (B, N, M, D)
        desc = (cum <= u[..., None] * cum[..., -1:]).sum(-1)
        return np.minimum(desc, self.last[agent])  # u * total rounding up to the total


def second_order_probs(fidelity: np.ndarray, log_belief: np.ndarray, hyp_probs: np.ndarray,
                       own: np.ndarray) -> np.ndarray:
    """(S, 5) Imitator(k -> i) in i's situation: f * sum_h b(h) pi_h(s_i) + (1 - f) * own(s_i).

    fidelity (S,), log_belief (S, H) k's belief about i, hyp_probs (S, H, 5) every hypothesis in
    i's situation, own (S, 5) k's own policy in i's situation.
    """
    pred = np.einsum("sh,sha->sa", softmax(log_belief), hyp_probs)
    f = np.asarray(fidelity)[:, None]
    return f * pred + (1 - f) * own


def _persona_in(cast: Cast, sit, cstate, w, k, i) -> np.ndarray:
    """(S, 5) persona (w, k) in agent (w, i)'s situation: k's preferences and its own internal
    state (a family persona its phase and recent cells), acting on what i knows of the world: what
    i sees now and, for a believer, what i remembers (i's memory, as for a described believer; the
    memoryless and trait personas act on i's view alike)."""
    memory = None if cstate.memory is None else cstate.memory[w, i]
    after = None if cstate.after is None else cstate.after[w, i]
    return persona_probs(cast.params.take((w, k)), sit.take((w, i)), cstate.log_belief[w, k],
                         cast.hypotheses, memory=memory, after=after, config=cast.config,
                         family=cast.family_inputs(cstate, (w, k), (w, i)))


_TRAIN_TEMPLATES = [[i for i, t in enumerate(TEMPLATES[k]) if not t.held_out] for k in Kind]


def _templates(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A training form (``TEMPLATES[kind]``, training families only) for every prompt of the given kinds."""
    lens = np.array([len(x) for x in _TRAIN_TEMPLATES])
    table = np.array([x + [x[0]] * (lens.max() - len(x)) for x in _TRAIN_TEMPLATES])  # (5, L)
    r = rng.integers(1 << 30, size=kind.shape)
    return table[kind, r % lens[kind]]


def _prompt_texts(flat: dict, collected: np.ndarray, desc_traits, world_cfg: WorldConfig):
    """Texts and held-out flags of every sample; RETURN outcomes read from what happened."""
    space = PromptSpace(world_cfg.n_agents, world_cfg.n_colors, split="all")
    desc, horizon, color = flat["aux"].T
    kind, t, w, i = flat["kind"], flat["t"], flat["world"], flat["agent"]
    ret = kind == Kind.RETURN
    n_ret = np.zeros(kind.shape, dtype=np.int64)
    if ret.any():
        end = np.minimum(t + horizon, collected.shape[0] - 1)
        gained = collected[end[ret], w[ret], i[ret]] - collected[t[ret], w[ret], i[ret]]  # (R, C)
        c = color[ret]
        n_ret[ret] = np.where(c == -1, gained.sum(-1), gained[np.arange(c.size), np.maximum(c, 0)])
    cache: dict[tuple, tuple[str, bool]] = {}
    texts, held = [], np.zeros(kind.shape, dtype=bool)
    names = world_cfg.color_names
    for s, key in enumerate(zip(kind.tolist(), flat["template"].tolist(), flat["surface"].tolist(), flat["target"].tolist(),
                                np.where(kind == Kind.DESCRIBE, desc, -1).tolist(),
                                np.where(ret, n_ret, -1).tolist(), np.where(ret, color, -2).tolist(),
                                np.where(ret, horizon, -1).tolist(), strict=True)):
        if key not in cache:
            k, tmpl, surface, target, d, nr, col, h = key
            prompt = render(Kind(k), tmpl, surface=surface, target=target if target >= 0 else None,
                            trait=desc_traits[d] if d >= 0 else None,
                            outcome=(nr, "any" if col == -1 else names[col], h) if nr >= 0 else None)
            cache[key] = (space.validate(prompt).text, prompt.held_out)
        text, held[s] = cache[key]
        texts.append(text)
    return texts, held
