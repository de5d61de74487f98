"""What every probe shares: querying the model on recorded scenes, exact cross-entropies, intervals.

``ModelProbe`` asks the model, in the seat of any agent at any step of a recorded scene, what it
would do under any prompt, from exactly what that agent observed (the same computation as
training and as ``ModelPolicy``). ``Scene`` holds a recorded batch of worlds with their exact
situations. Probes seed everything from their own named streams (``streams.PROBE_DRAWS`` and
``streams.PROBE_SCENES``), disjoint from the generator's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Formatter

import numpy as np
import torch

from mirrorhall import streams
from mirrorhall.agents.scene import Episode as SceneEpisode
from mirrorhall.envs.core import NO_ACTION, WorldConfig, WorldCore, WorldState
from mirrorhall.envs.perception import (
    Situations,
    entity_features,
    gem_sightings,
    look,
    situations,
    unseen_gems,
)
from mirrorhall.errors import ConfigError
from mirrorhall.imitation.checkpoint import load_model
from mirrorhall.imitation.model_io import (
    check_compatible,
    distribution,
    encode_prompts,
    gather_inputs,
    warn_unread,
)
from mirrorhall.imitation.policy import ModelPolicy
from mirrorhall.imitation.prompts import fill, shorten


def cross_entropy(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(...,) exact expected cross-entropy -sum_a true(a) log pred(a) (nats)."""
    return -(true * np.log(np.clip(pred, 1e-12, None))).sum(-1)


def entropy(p: np.ndarray) -> np.ndarray:
    return cross_entropy(p, p)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(...,) KL(p || q)."""
    return cross_entropy(p, q) - entropy(p)


def mean_ci(x, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean with a 95% bootstrap interval over the samples (episodes)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    rng = streams.rng(streams.BOOTSTRAP, seed)
    boots = x[rng.integers(x.size, size=(n_boot, x.size))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(x.mean()), "ci95": [float(lo), float(hi)], "n": int(x.size)}


def fraction_ci(ce_prior, ce_model, ce_bayes, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fraction of attainable information (CE_prior - CE_model) / (CE_prior - CE_bayes) of the
    means, with a 95% bootstrap interval resampling episodes jointly."""
    p, m, b = (np.asarray(v, dtype=np.float64) for v in (ce_prior, ce_model, ce_bayes))
    gap = p.mean() - b.mean()
    if p.size == 0 or gap <= 1e-9:
        return {"mean": None, "ci95": [None, None], "n": int(p.size)}
    rng = streams.rng(streams.BOOTSTRAP, seed)
    idx = rng.integers(p.size, size=(n_boot, p.size))
    bp, bm, bb = p[idx].mean(1), m[idx].mean(1), b[idx].mean(1)
    # resamples where the observer gains (almost) nothing carry no fraction: leave them out
    fr = np.where(bp - bb > 0.1 * gap, (bp - bm) / np.maximum(bp - bb, 1e-12), np.nan)
    lo, hi = np.nanpercentile(fr, [2.5, 97.5])
    return {"mean": float((p.mean() - m.mean()) / gap), "ci95": [float(lo), float(hi)], "n": int(p.size)}


def excess_tail(ce_prior, ce_model, ce_bayes, worst: int = 5) -> dict:
    """How much of the model's shortfall a few scenes hold. A fraction of attainable information
    is a ratio of means, so one scene the model gets confidently wrong can move it by several
    hundredths; this reports the ``worst`` scenes' excess cross-entropy over Bayes (nats,
    largest first), their share of the excess summed over the scenes where the model trails
    Bayes, and the fraction without them (none of these below 4 x ``worst`` scenes)."""
    p, m, b = (np.asarray(v, dtype=np.float64) for v in (ce_prior, ce_model, ce_bayes))
    excess = m - b
    if excess.size < 4 * worst:
        return {"worst": worst, "excess_ce": [], "share_of_excess": None, "fraction_without": None}
    order = np.argsort(-excess, kind="stable")[:worst]
    rest = np.ones(excess.size, dtype=bool)
    rest[order] = False
    gap = p[rest].mean() - b[rest].mean()
    total = excess[excess > 0].sum()
    return {"worst": worst, "excess_ce": [float(excess[i]) for i in order],
            "share_of_excess": float(excess[order].sum() / total) if total > 1e-12 else None,
            "fraction_without": float((p[rest].mean() - m[rest].mean()) / gap) if gap > 1e-9 else None}


def slope_ci(xs, ys, n_boot: int = 1000, seed: int = 0) -> dict:
    """Least-squares slope of the means of ``ys[i]`` (samples at level ``xs[i]``) against ``xs``,
    with a 95% bootstrap interval resampling the samples of each level independently."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = [np.asarray(y, dtype=np.float64) for y in ys]
    if xs.size < 2 or any(y.size == 0 for y in ys):
        return {"mean": None, "ci95": [None, None], "n": int(sum(y.size for y in ys))}
    rng = streams.rng(streams.BOOTSTRAP, seed)
    means = np.stack([y[rng.integers(y.size, size=(n_boot, y.size))].mean(1) for y in ys], 1)  # (n_boot, L)
    xc = xs - xs.mean()
    boots = (means - means.mean(1, keepdims=True)) @ xc / (xc @ xc)  # (n_boot,) slopes
    lo, hi = np.percentile(boots, [2.5, 97.5])
    mean = float(np.polyfit(xs, [y.mean() for y in ys], 1)[0])
    return {"mean": mean, "ci95": [float(lo), float(hi)], "n": int(sum(y.size for y in ys))}


# --- wordings: the user's own templates, run on a probe's scenes beside its canonical template ---

PLACEHOLDERS = {"k": "the target's id", "desc": "the described persona", "n": "the number of gems asked for",
                "what": "the asked colour with its noun ('red gems')", "horizon": "the steps allowed"}
"""Every placeholder a probe's wording may hold, and what the probe puts there."""


@dataclass(frozen=True)
class Wordings:
    """How a probe fills a wording (``--prompt TEMPLATE``): the placeholders it can fill, those a
    wording must hold, and its canonical template (always run first)."""

    probe: str
    canonical: str
    fills: tuple[str, ...]
    needs: tuple[str, ...]

    def check(self, templates) -> tuple[str, ...]:
        """The templates, each checked; ``ConfigError`` in one line naming the problem and the fix."""
        out = []
        for text in templates:
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"--prompt must be a non-empty text, e.g. {self.canonical!r}")
            try:
                fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(text) if name is not None]
            except ValueError:
                fills = ", ".join(f"{{{f}}}" for f in self.fills) or "no placeholder"
                raise ConfigError(f"--prompt {shorten(text)}: unbalanced braces; probe {self.probe} fills "
                                  f"{fills} and takes no other braces (e.g. {self.canonical!r})") from None
            for name, spec, conv in fields:
                if spec or conv or name not in PLACEHOLDERS or name not in self.fills:
                    fills = ", ".join(f"{{{f}}}" for f in self.fills) or "no placeholder"
                    raise ConfigError(f"--prompt {shorten(text)}: probe {self.probe} cannot fill {{{name}"
                                      f"{'!' + conv if conv else ''}{':' + spec if spec else ''}}}; it fills {fills}")
            missing = [n for n in self.needs if n not in {f[0] for f in fields}]
            if missing:
                raise ConfigError(f"--prompt {shorten(text)} has no {{{missing[0]}}}; probe {self.probe} puts "
                                  f"{PLACEHOLDERS[missing[0]]} there, e.g. {self.canonical!r}")
            out.append(text)
        return tuple(out)

    def warn_unread(self, tokenizer, templates) -> None:
        """One ``InputWarning`` per template holding words the model does not know (its
        placeholders, filled with known words, left out). A probe's built-in wordings (held-out and
        nonsense ones included) are deliberate tests and are not passed here."""
        for text in dict.fromkeys(templates):
            literal = " ".join(part for part, *_ in Formatter().parse(text))
            warn_unread(tokenizer, literal, stacklevel=3, quote=text)

    def all(self, templates) -> tuple[str, ...]:
        """The canonical template first, then the checked ``templates``."""
        return (self.canonical, *self.check(templates))


def wording_text(template: str, *, target=None, trait=None, outcome=None) -> str:
    """A checked wording with its placeholders filled (``imitation.prompts.fill``)."""
    return fill(template, target=target, trait=trait, outcome=outcome)


@dataclass
class Scene:
    """B recorded worlds of T steps: states, and every agent's exact situation at every step."""

    config: WorldConfig
    episode: SceneEpisode
    states: list[WorldState]  # T + 1 states, each a batch of B worlds
    situations: list[Situations]  # T + 1, each (B, N)
    _features: tuple | None = None
    memo: dict = field(default_factory=dict, repr=False)
    """Results computed once per scene by probes that ask again (``language.return_labels``)."""

    @classmethod
    def from_episode(cls, ep: SceneEpisode) -> Scene:
        core = WorldCore(ep.config)
        b, n = ep.agent_pos.shape[1:3]
        states, sits = [], []
        for t in range(ep.agent_pos.shape[0]):
            last = ep.actions[t - 1] if t > 0 else np.full((b, n), NO_ACTION)
            st = core.recorded_state(ep.agent_pos[t], ep.gem_pos[t], last, t=t)
            states.append(st)
            sits.append(situations(core, st))
        return cls(ep.config, ep, states, sits)

    def situation(self, t: int, world, agent) -> Situations:
        return self.situations[t].take((world, agent))

    def features(self, place: bool = False, perspective: bool = False,
                 pickups: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(feats (T + 1, B, N, N, 5, F) int8, visible (T + 1, B, N, N)), computed once (with the
        place, perspective and pickup columns or without; each followed from step 0)."""
        key = (place, perspective, pickups)
        if self._features is None or self._features[0] != key:
            core = WorldCore(self.config)
            pairs, belief = [], None
            before = unseen_gems(self.config, self.states[0].batch_size, self.config.n_agents) if pickups else None
            for st in self.states:
                belief = look(core, st, memory=belief) if perspective else None
                pairs.append(entity_features(core, st, place=place, belief=belief, before=before))
                if pickups:
                    before = gem_sightings(core, st)
            self._features = (key, np.stack([p[0] for p in pairs]).astype(np.int8), np.stack([p[1] for p in pairs]))
        return self._features[1:]


class ModelProbe:
    """The model of a checkpoint, queried in any agent's seat of a recorded scene."""

    new_bar = None
    """``new_bar(total)`` -> a progress bar (tqdm) for the running probe, which ``expect``
    opens and ``tick`` advances; None: quiet."""
    bar = None

    def __init__(self, checkpoint):
        self.model, self.tokenizer, self.meta = load_model(checkpoint)
        self.path = str(checkpoint)

    def expect(self, total: int) -> None:
        """The running probe will ``tick`` ``total`` times (its bar opens, or restarts, at 0 of
        ``total``)."""
        if self.bar is not None:
            self.bar.reset(total=total)
        elif self.new_bar is not None:
            self.bar = self.new_bar(total)

    def tick(self, n: int = 1) -> None:
        """One more part of the running probe is done."""
        if self.bar is not None:
            self.bar.update(n)

    def policy(self, core: WorldCore, agents) -> ModelPolicy:
        """A ``ModelPolicy`` of this (already loaded) model driving ``agents`` of ``core``'s worlds."""
        return ModelPolicy(self.model, self.tokenizer, core, agents)

    @torch.no_grad()
    def query(self, scene: Scene, world: np.ndarray, agent: np.ndarray, t: np.ndarray, prompts: list[str],
              situation: np.ndarray | None = None) -> np.ndarray:
        """(Q, 5) the model's action distribution for agent ``agent[q]`` of world ``world[q]`` at
        step ``t[q]``, prompted ``prompts[q]``, from what that agent observed up to t.

        ``situation[q]`` (default: the agent itself) puts the agent, with its memory, in another
        agent's current situation as it sees it: the counterfactual "what would you do there?".
        """
        check_compatible(self.model.config, scene.config)
        world, agent, t = (np.asarray(x, dtype=np.int64) for x in (world, agent, t))
        situation = agent if situation is None else np.asarray(situation, dtype=np.int64)
        cfg = self.model.config
        feats, vis = scene.features(bool(cfg.place), cfg.perspective, cfg.pickups)  # (T + 1, B, N, N, 5, F) int8, (T + 1, B, N, N)
        out = np.zeros((world.size, 5))
        full = scene.config.view_radius is None
        worlds = np.unique(world)
        for start in range(0, worlds.size, 32):  # a chunk of worlds at a time bounds memory
            chunk = worlds[start: start + 32]
            sel = np.flatnonzero(np.isin(world, chunk))
            steps = int(t[sel].max())
            f = torch.from_numpy(np.moveaxis(feats[: steps + 1, chunk], 0, 1)).float()  # (E, T + 1, N, N, 5, F)
            v = torch.from_numpy(np.moveaxis(vis[: steps + 1, chunk], 0, 1))  # (E, T + 1, N, N)
            acts = np.moveaxis(scene.episode.actions[:steps, chunk], 0, 1).astype(np.int64)  # (E, T, N)
            a = torch.from_numpy(acts.reshape(chunk.size, steps, scene.config.n_agents))
            e = torch.from_numpy(np.searchsorted(chunk, world[sel]))
            tt, ii, jj = (torch.from_numpy(x[sel]) for x in (t, agent, situation))
            tokens = encode_prompts(self.tokenizer, [prompts[q] for q in sel], self.model.config.max_prompt_len)
            logits = self.model(**gather_inputs(self.model, f, v, a, e, tt, ii, tokens, situation=jj, full_view=full))
            out[sel] = distribution(logits)
        return out


