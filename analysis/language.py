"""Probe ``language``: does the model read a prompt by what its words mean?

For every meaning kind, wordings run on the same scenes as the kind's canonical template
(``imitation.prompts.CANONICAL``), through the probe that measures that kind (its ``prompts``):

    kind      probe          figure per wording
    SELF      self           fraction of attainable information at K = 10
    OTHER     imitate        fraction of attainable information at K = 10
    SECOND    second_order   margin over the SELF baseline at K = 20 (nats)
    DESCRIBE  describe       KL to the described persona, seen combinations (nats; lower is better)
    RETURN    outcome        slope of gems collected per gem asked (closed loop)

The wordings of a kind:

- ``canonical``: the canonical template;
- ``held_out``: every form of every held-out family (``families(kind, held_out=True)``: whole
  verbs and frames that never appear in training); a family's figure is the mean over its forms;
- ``nonsense``: the shape-matched control: every word of the canonical template replaced by a
  nonsense word (seeded, none a word of the prompt language), in the same count and positions; the
  placeholders' values stay (the agent's name "agent {k}", the persona, the outcome);
- ``scrambled``: the canonical template's words in a seeded other order (placeholders as units);
- ``filler_before`` / ``filler_after``: the canonical template with each of ``FILLERS_BEFORE``
  before it or ``FILLERS_AFTER`` after it; the largest change of the figure is reported.

A control "scores like the meaning" when its figure lies within the canonical template's 95%
interval or beyond it on the better side; the result says so in plain words.

Minimal pairs: in scenes where agent 0 (the model's seat) and agent k are trait personas of the
training split, four prompts that share "agent", the id k and most of their shape but differ in
meaning are asked at K = 10 in the same situations: OTHER(k) "behave as agent k", SECOND(k)
"pretend to be agent k pretending to be you", RETURN(k, colour, 20) "collect k <colour> gems in
the next 20 steps" and DESCRIBE(h) with h following agent k ("behave as a casual agent that likes
<other colour> gems and follows agent k"). Each has its meaning's label (``meaning_labels``: the
exact distributions hindsight labelling trains on; for RETURN, ``return_labels``: the action an
agent takes given that it then reaches the outcome, as labelling trains on it, estimated from
continuations of the scene; where no continuation reaches it, as for most large n in 20 steps, the
situation has no RETURN label and is left out, counted). A case counts as discriminated
when the model's output is closer (KL from the label) to its own member's label than to every other
member's. Situations where two members' labels agree (KL below ``DISTINCT``) cannot tell them apart
and are left out (counted). Per member, ``label_gap`` is the median KL from its label to the nearest
other member's label and ``model_gap`` the model's median KL to its own label: where the first is
not well above the second, the meanings ask for nearly the same moves and misses say little about
reading. The figure is the share of discriminated cases, with a bootstrap
interval over scenes; chance is about one in four. Beside it, ``ceiling``: the same share for the
best reader that must learn agent k by watching, which answers OTHER with the exact Bayes
observer's prediction after k's K steps (``bayes_other``: how often that is discriminated) and
every other member with its exact label; no reader that infers k from K steps can be expected
above it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import BayesObserver, HypothesisSet
from mirrorhall.agents.cast import trait_probs
from mirrorhall.agents.personas import STYLES, Imitator, Trait
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import gains_after
from mirrorhall.analysis import describe, imitate, outcome, second_order, self_probe
from mirrorhall.analysis.common import ModelProbe, Scene, kl, mean_ci
from mirrorhall.analysis.reporting import axes, fmt, fmt_ci, save, verdict
from mirrorhall.envs.core import COLOR_NAMES
from mirrorhall.errors import ConfigError, InputWarning
from mirrorhall.imitation.labels import second_order_probs
from mirrorhall.imitation.prompts import (
    CANONICAL,
    FILLERS_AFTER,
    FILLERS_BEFORE,
    Kind,
    Prompt,
    families,
    fill,
    grammar_words,
    parse_prompt,
)

K_PAIRS = 10
"""Steps watched before the minimal pairs are asked."""
DISTINCT = 0.01
"""Members whose labels are closer than this (KL, nats, either way) cannot be told apart."""
HORIZON = 20
"""The horizon of the RETURN member of the minimal pairs."""
ROLLOUTS = 512
"""Continuations of a scene after each first move that estimate a RETURN label (``return_labels``);
the label's own sampling noise is reported (``label_noise``)."""
MIN_REACHED = 1 / 40
"""A RETURN outcome reached by fewer than this share of the continuations is out of reach: left out."""
SCREEN = 64
"""Continuations per move that first screen out the worlds where a RETURN outcome is never reached."""
# episodes of each kind's probe per scene of this probe's own (its ``episodes`` are imitate-sized):
# the ratios of those probes' full-scale counts (report.SCALES), at least MIN_EPISODES
SHARE = {Kind.SELF: 1.0, Kind.OTHER: 1.0, Kind.SECOND: 64 / 280, Kind.DESCRIBE: 64 / 280, Kind.RETURN: 24 / 280}
MIN_EPISODES = {Kind.SELF: 1, Kind.OTHER: 1, Kind.SECOND: 2, Kind.DESCRIBE: 2, Kind.RETURN: 4}
FIGURE_WORDS = {
    Kind.SELF: ("fraction of attainable information at K=10", True,
                "In agent k's own seat after it acted for 10 steps, told the wording: how much of the information "
                "the Bayes observer extracts from those 10 steps the model uses (1: all of it; 0: no better than "
                "knowing nothing about k; below 0: worse)."),
    Kind.OTHER: ("fraction of attainable information at K=10", True,
                 "After watching agent k for 10 steps, told the wording: how much of the information the Bayes "
                 "observer extracts about k the model uses when acting as k (1: all; 0: no better than knowing "
                 "nothing about k; below 0: worse)."),
    Kind.SECOND: ("margin over the SELF baseline at K=20 (nats)", True,
                  "Told the wording while agent k imitates it: how much better (in nats) the model predicts k than "
                  "the baseline that assumes k imitates perfectly; above 0 means the model models being imitated."),
    Kind.DESCRIBE: ("KL to the described persona (nats)", False,
                    "Told the wording with a persona described in words: how far (KL, nats) its actions are from "
                    "that persona's exact distribution; 0 is exact, lower is better."),
    Kind.RETURN: ("slope of gems collected per gem asked", True,
                  "Told the wording asking for n gems of a colour, in closed loop: how many more gems of that colour "
                  "it collects per extra gem asked; above 0 means it follows the request."),
}


# --- the wordings of a kind ------------------------------------------------------------------------


def _units(template: str) -> list[str]:
    """The template's words, with each placeholder (and "agent {k}", the agent's name) as one unit."""
    out, words = [], template.split()
    i = 0
    while i < len(words):
        if words[i] == "agent" and i + 1 < len(words) and words[i + 1] == "{k}":
            out.append("agent {k}")
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


def nonsense_words(count: int, rng: np.random.Generator, avoid: set[str]) -> list[str]:
    """``count`` distinct pronounceable nonsense words (consonant-vowel syllables), none in ``avoid``."""
    cons, vows = "bdfgklmnprstvz", "aeiou"
    out: list[str] = []
    while len(out) < count:
        n = int(rng.integers(1, 3))
        w = "".join(cons[rng.integers(len(cons))] + vows[rng.integers(len(vows))] for _ in range(n))
        w += cons[rng.integers(len(cons))]
        if w not in avoid and w not in out:
            out.append(w)
    return out


def controls(template: str, rng: np.random.Generator) -> tuple[str, str]:
    """(nonsense, scrambled) shape-matched controls of ``template`` (see the module docstring)."""
    units = _units(template)
    meaning = [i for i, u in enumerate(units) if "{" not in u]
    fresh = iter(nonsense_words(len(meaning), rng, grammar_words()))
    nonsense = [next(fresh) if i in meaning else u for i, u in enumerate(units)]
    order = np.arange(len(units))
    while len(units) > 1 and (order == np.arange(len(units))).all():
        order = rng.permutation(len(units))
    return " ".join(nonsense), " ".join(units[i] for i in order)


def wordings(kind: Kind, rng: np.random.Generator) -> list[dict]:
    """The wordings of ``kind``: dicts ``role``, ``family`` (held-out forms) and ``prompt``."""
    canonical = CANONICAL[kind]
    out = [{"role": "canonical", "family": None, "prompt": canonical}]
    out += [{"role": "held_out", "family": f.name, "prompt": form} for f in families(kind, held_out=True) for form in f.forms]
    nonsense, scrambled = controls(canonical, rng)
    out += [{"role": "nonsense", "family": None, "prompt": nonsense},
            {"role": "scrambled", "family": None, "prompt": scrambled}]
    out += [{"role": "filler_before", "family": None, "prompt": f"{f} {canonical}"} for f in FILLERS_BEFORE]
    out += [{"role": "filler_after", "family": None, "prompt": f"{canonical} {f}"} for f in FILLERS_AFTER]
    return out


# --- each kind through its own probe ---------------------------------------------------------------


def _figures(kind: Kind, probe: ModelProbe, population: str, episodes: int, seed: int, extra: list[str]) -> list[dict]:
    """One figure per wording (the canonical template first, then ``extra``), from the kind's probe."""
    if kind == Kind.SELF:
        r = self_probe.run(probe, population, episodes=episodes, seed=seed, ks=(K_PAIRS,), prompts=extra)
        return [e["fraction"][str(K_PAIRS)] for e in r["prompts"]]
    if kind == Kind.OTHER:
        r = imitate.run(probe, population, episodes=episodes, seed=seed, ks=(K_PAIRS,), closed_loop=False, prompts=extra)
        return [e["fraction"][str(K_PAIRS)] for e in r["prompts"]]
    if kind == Kind.SECOND:
        r = second_order.run(probe, population, episodes=episodes, seed=seed, ks=(20,), essay=False, prompts=extra)
        return [e["margin_vs_self"] for e in r["prompts"]]
    if kind == Kind.DESCRIBE:
        return [e["kl"] for e in describe.run(probe, population, episodes=episodes, seed=seed, prompts=extra)["prompts"]]
    return [e["slope"] for e in outcome.run(probe, population, episodes=episodes, seed=seed, prompts=extra)["prompts"]]


def _kind_result(kind: Kind, rows: list[dict], figures: list[dict]) -> dict:
    """The verdicts of one kind in numbers and plain words."""
    label, higher, explain = FIGURE_WORDS[kind]
    canon = figures[0]
    c = canon["mean"]
    sign = 1 if higher else -1
    lo, hi = canon["ci95"]
    fams: dict[str, list[float]] = {}
    for row, fig in zip(rows, figures, strict=True):
        if row["role"] == "held_out" and fig["mean"] is not None:
            fams.setdefault(row["family"], []).append(fig["mean"])
    held = []
    for name, values in fams.items():
        m = float(np.mean(values))
        fraction = kind in (Kind.SELF, Kind.OTHER)  # judged as a ratio to the template; others as a difference
        held.append({"family": name, "mean": m, "ratio": m / c if fraction and c not in (None, 0) else None,
                     "difference": None if c is None else m - c})
    fill_changes = [(abs(fig["mean"] - c), row["prompt"]) for row, fig in zip(rows, figures, strict=True)
                    if row["role"].startswith("filler") and fig["mean"] is not None and c is not None]
    worst = max(fill_changes, default=(None, None))
    ctrl = []
    for row, fig in zip(rows, figures, strict=True):
        if row["role"] in ("nonsense", "scrambled"):
            m = fig["mean"]
            like = bool(m is not None and c is not None and lo is not None and sign * m >= sign * (lo if higher else hi))
            ctrl.append({"role": row["role"], "prompt": row["prompt"], "mean": m, "like_meaning": like,
                         "words": _control_words(kind, row, m, c, like, label)})
    return {"figure": label, "higher_is_better": higher, "explain": explain, "canonical": c,
            "held_out": held, "filler_max_change": worst[0], "filler_worst": worst[1], "controls": ctrl}


def _control_words(kind: Kind, row: dict, m, c, like: bool, label: str) -> str:
    what = "with nonsense words in place of its words" if row["role"] == "nonsense" else "with its words scrambled"
    if m is None or c is None:
        return f"The canonical template {what} ('{row['prompt']}') was not measured."
    if like and kind in (Kind.SELF, Kind.OTHER) and row["role"] == "nonsense":
        names = ("a prompt that names no agent, persona or outcome as SELF, the one meaning that names nothing"
                 if kind == Kind.SELF else "a prompt that names agent k and nothing else as OTHER")
        return (f"The canonical template {what} ('{row['prompt']}') scores like the meaning ({fmt(m)} against "
                f"{fmt(c)}, {label}): the model reads {names}, whatever its other words (what `train "
                f"--unreadable` teaches), so this control cannot show whether {kind.name}'s own words are read.")
    if like:
        return (f"The canonical template {what} ('{row['prompt']}') scores like the meaning ({fmt(m)} against "
                f"{fmt(c)}, {label}): the model does not need those words in that order to do this, so it is "
                f"reading something else, such as where the agent's name or the values sit.")
    return (f"The canonical template {what} ('{row['prompt']}') scores {fmt(m)} against {fmt(c)} ({label}), "
            f"outside the template's interval: the words matter here.")


# --- minimal pairs -------------------------------------------------------------------------------


def meaning_labels(scene: Scene, world: np.ndarray, seat: np.ndarray, t: int, prompt: Prompt, hypotheses) -> np.ndarray:
    """(B, 5) the label of ``prompt``'s meaning for the agent at ``seat[b]`` of world ``world[b]`` at
    step ``t``, as hindsight labelling computes it (``imitation/labels.py``): SELF its own persona;
    OTHER(k) k's persona in its situation; SECOND(k) ``Imitator(k -> seat)`` with k's fidelity (1 if
    k imitates no one), k's Bayes belief about the seat from its first t steps (``hypotheses``) and
    k's own trait; DESCRIBE(h) h's exact distribution; RETURN(n, colour, h) the action taken given
    the outcome then reached (``return_labels``; NaN rows where it is out of reach). Trait personas
    only."""
    world, seat = np.asarray(world), np.asarray(seat)
    sit = scene.situation(t, world, seat)
    n_colors, agents = scene.config.n_colors, scene.config.n_agents
    personas = scene.episode.personas

    def traits_probs(traits):
        codes = HypothesisSet(traits, n_colors, agents)
        return trait_probs(sit, codes.likes, codes.social, codes.beta)

    if prompt.kind == Kind.SELF:
        return traits_probs([personas[w][s] for w, s in zip(world, seat, strict=True)])
    if prompt.kind == Kind.OTHER:
        return traits_probs([personas[w][prompt.target] for w in world])
    if prompt.kind == Kind.DESCRIBE:
        return traits_probs([prompt.trait] * world.size)
    if prompt.kind == Kind.RETURN:
        return return_labels(scene, world, seat, t, prompt, hypotheses)
    k = prompt.target
    observer = BayesObserver(hypotheses)
    log_post = observer.prior((world.size,))
    for tau in range(t):
        log_post = observer.update(log_post, scene.situation(tau, world, seat), scene.episode.actions[tau, world, seat])
    of_k = [personas[w][k] for w in world]
    fidelity = np.array([p.fidelity if isinstance(p, Imitator) else 1.0 for p in of_k])
    own = traits_probs([p.own if isinstance(p, Imitator) else p for p in of_k])
    return second_order_probs(fidelity, log_post, hypotheses.probs(sit), own)


def return_labels(scene: Scene, world: np.ndarray, seat: np.ndarray, t: int, prompt: Prompt,
                  hypotheses: HypothesisSet, half: int | None = None) -> np.ndarray:
    """(B, 5) the hindsight label of RETURN(n, colour, h) for the agent at ``seat[b]`` of world
    ``world[b]`` at step ``t``: what it does, given that it then collects exactly n gems of that
    colour (any colour: n in all) in the next h steps, as labelling trains on (the action it took,
    asked with the outcome it reached). What the agent is enters as its first t steps tell it:

        label(a) = sum_h P(h | its t steps) pi_h(a | s) P(n | a, h), normalised,

    over the training hypotheses h, with P(n | a, h) from continuations of the scene after first
    move a (``agents.scene.gains_after``): ``ROLLOUTS`` personas drawn from the posterior, each
    continued after each first move, seeded by the scene's seed. With the persona known exactly
    most outcomes asked are out of reach (a casual red-liker does not collect 6 green gems), so no
    such label would exist; a reader that knows of itself only what it did reads "collect 6 green
    gems" as telling it who it is. NaN rows: out of reach (a share of the continuations below
    ``MIN_REACHED`` reach it, or none of ``SCREEN`` continuations per move run first, whose draws
    the estimate does not reuse). ``half`` 0 or 1: the estimate from that half of the continuations
    alone (two independent estimates, whose distance measures the label's sampling noise)."""
    n, color, horizon = prompt.outcome
    colour = None if color == "any" else list(scene.config.color_names).index(color)

    def count(gains):
        return gains.sum(-1) if colour is None else gains[..., colour]

    out = np.full((world.size, 5), np.nan)
    for s in np.unique(seat):
        key = ("return", t, int(s), n, color, horizon, len(hypotheses), ROLLOUTS)
        if key not in scene.memo:  # every world of the scene, replayed as it was run
            b = scene.episode.actions.shape[1]
            w, at = np.arange(b), np.full(b, int(s))
            observer = BayesObserver(hypotheses)
            log_post = observer.prior((b,))
            for tau in range(t):
                log_post = observer.update(log_post, scene.situation(tau, w, at), scene.episode.actions[tau, :, s])
            post = np.exp(log_post - log_post.max(-1, keepdims=True))
            post /= post.sum(-1, keepdims=True)
            rng = streams.rng(streams.LANGUAGE_WORDINGS, scene.episode.seed, 2)
            drawn = np.stack([rng.choice(len(hypotheses), size=ROLLOUTS, p=p) for p in post])  # (B, R)
            specs = [[hypotheses.traits[h] for h in row] for row in drawn]
            args = (scene.config, scene.episode.personas, scene.episode.seed, t, int(s), horizon)
            # a screen: worlds where none of SCREEN continuations per move reaches the outcome are
            # out of reach (one reached by a share 1/40 is missed so with probability (39/40)^(5 SCREEN))
            screen = gains_after(*args, [r[:SCREEN] for r in specs], rng)
            keep = np.flatnonzero((count(screen) == n).any((1, 2)))
            gains = gains_after(*args, [specs[i] for i in keep], rng, worlds=keep) if keep.size else None
            pi = np.take_along_axis(hypotheses.probs(scene.situation(t, w, at)), drawn[..., None], axis=1)  # (B, R, 5)
            scene.memo[key] = (keep, gains, pi[keep])
        keep, gains, pi = scene.memo[key]
        if half is not None:
            part = slice(0, ROLLOUTS // 2) if half == 0 else slice(ROLLOUTS // 2, None)
            gains, pi = (None, pi) if gains is None else (gains[:, :, part], pi[:, part])
        slot_of = np.full(scene.episode.actions.shape[1], -1)
        slot_of[keep] = np.arange(keep.size)  # each world's row of gains, -1 if screened out
        mine = np.flatnonzero(seat == s)
        mine = mine[slot_of[world[mine]] >= 0]
        if not mine.size:
            continue
        slot = slot_of[world[mine]]
        hits = count(gains[slot]) == n  # (m, 5, R)
        weight = (pi[slot].transpose(0, 2, 1) * hits).sum(-1)  # (m, 5)
        z = weight.sum(-1, keepdims=True)
        ok = (hits.mean((1, 2)) >= MIN_REACHED) & (z[:, 0] > 0)
        out[mine[ok]] = weight[ok] / z[ok]
    return out


def pair_members(k: int, rng: np.random.Generator, n_colors: int) -> list[Prompt]:
    """The four minimal-pair members naming agent (and number) ``k``."""
    names = COLOR_NAMES[:n_colors]
    first, second = rng.choice(len(names), size=2, replace=False)
    style = list(STYLES)[rng.integers(len(STYLES))]
    texts = [fill(CANONICAL[Kind.OTHER], target=k), fill(CANONICAL[Kind.SECOND], target=k),
             fill(CANONICAL[Kind.RETURN], outcome=(k, names[first], HORIZON)),
             fill(CANONICAL[Kind.DESCRIBE], trait=Trait(names[second], "follow", style, k))]
    return [parse_prompt(t) for t in texts]


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def minimal_pairs(probe: ModelProbe, population: str, episodes: int, seed: int = 0, agents: int = 8) -> dict:
    """Discrimination of the minimal pairs (module docstring), with a 95% interval over scenes."""
    rng = streams.rng(streams.LANGUAGE_WORDINGS, seed, 1)
    n_colors = probe.model.config.n_colors
    hypotheses = get_population(population).hypotheses(n_colors, agents)
    _, groups, scene_hyp, scenes = imitate.watched_scenes(probe, "language", population, episodes, seed, agents,
                                                          K_PAIRS, driven=False, trait_seat=True)
    observer = BayesObserver(scene_hyp)
    per_world, per_member, dropped, unreached, total, example = [], {}, 0, 0, 0, None
    gaps, misses = {}, {}  # per member: KL from its label to the nearest other label, and the model's to its own
    noise = []  # KL between RETURN labels estimated from either half of the continuations
    ceiling_world, bayes_other = [], []
    probe.expect(len(groups))
    for ws in scenes:
        b = len(ws.rows)
        w, seat = np.arange(b), np.zeros(b, np.int64)
        members = pair_members(ws.k, rng, n_colors)
        labels = np.stack([meaning_labels(ws.scene, w, seat, K_PAIRS, m, hypotheses) for m in members])  # (M, B, 5)
        outs = np.stack([probe.query(ws.scene, w, seat, np.full(b, K_PAIRS), [m.text] * b) for m in members])  # (M, B, 5)
        d = kl(labels[None, :], outs[:, None])  # (M asked, M label, B): KL(label || output)
        apart = kl(labels[:, None], labels[None, :])  # (M, M, B)
        off = ~np.eye(len(members), dtype=bool)
        ret = [i for i, m in enumerate(members) if m.kind == Kind.RETURN][0]
        halves = [return_labels(ws.scene, w, seat, K_PAIRS, members[ret], hypotheses, half=h) for h in (0, 1)]
        reach = ~np.isnan(labels).any((0, 2))  # (B,) the RETURN outcome is within reach
        usable = reach & (apart[off] >= DISTINCT).all(0)  # (B,)
        unreached += int((~reach).sum())
        both = usable & ~np.isnan(halves[0]).any(1) & ~np.isnan(halves[1]).any(1)
        noise += kl(halves[0][both], halves[1][both]).tolist()
        own = d[np.arange(len(members)), np.arange(len(members))]  # (M, B)
        others = np.where(off[..., None], d, np.inf).min(1)  # (M, B)
        hit = own < others  # (M, B)
        nearest = np.where(off[..., None], apart, np.inf).min(1)  # (M, B) a label's distance to the closest other
        for i, m in enumerate(members):
            per_member.setdefault(m.kind.name, []).extend(hit[i, usable].tolist())
            gaps.setdefault(m.kind.name, []).extend(nearest[i, usable].tolist())
            misses.setdefault(m.kind.name, []).extend(own[i, usable].tolist())
        per_world += hit[:, usable].mean(0).tolist()
        # the best reader that must infer agent k from its K steps: the Bayes observer's prediction
        # for OTHER (every other member answered with its exact label)
        log_post = observer.prior((b,))
        for tau in range(K_PAIRS):
            log_post = observer.update(log_post, ws.scene.situation(tau, w, np.full(b, ws.k)),
                                       ws.scene.episode.actions[tau, :, ws.k])
        guess = observer.predictive(log_post, ws.scene.situation(K_PAIRS, w, seat))  # (B, 5)
        other = [i for i, m in enumerate(members) if m.kind == Kind.OTHER][0]
        d_guess = kl(labels, guess[None])  # (M, B)
        hit_bayes = d_guess[other] < np.delete(d_guess, other, axis=0).min(0)
        bayes_other += hit_bayes[usable].tolist()
        ceiling_world += ((hit_bayes + len(members) - 1) / len(members))[usable].tolist()
        dropped += int((~usable).sum())
        total += b
        if example is None:
            example = [m.text for m in members]
        probe.tick()
    return {"accuracy": mean_ci(per_world), "members": {k: mean_ci(v) for k, v in per_member.items()},
            "label_gap": {k: _median(v) for k, v in gaps.items()}, "model_gap": {k: _median(v) for k, v in misses.items()},
            "label_noise": {"RETURN": _median(noise)}, "rollouts": ROLLOUTS,
            "situations": total - dropped, "left_out": dropped, "out_of_reach": unreached, "K": K_PAIRS,
            "example": example,
            "chance": 1 / 4, "ceiling": mean_ci(ceiling_world), "bayes_other": mean_ci(bayes_other)}


# --- the probe -----------------------------------------------------------------------------------


def run(probe: ModelProbe, population: str, episodes: int = 42, seed: int = 0, agents: int = 8,
        kinds=tuple(Kind), pairs: bool = True, seeds: int = 1) -> dict:
    """Every kind's wordings through its probe (``episodes`` scales them: it is the number of
    ``imitate``/``self`` scenes; the others take their share, ``SHARE``), then the minimal pairs.
    ``seeds`` > 1 runs the seeds ``seed`` .. ``seed + seeds - 1`` and pools them (``pool``)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}")
    if seeds > 1:
        return pool([run(probe, population, episodes, s, agents, kinds, pairs) for s in range(seed, seed + seeds)])
    kinds = [Kind(k) for k in kinds]
    if not kinds and not pairs:
        raise ConfigError("the language probe needs at least one kind or the minimal pairs")
    rng = streams.rng(streams.LANGUAGE_WORDINGS, seed, 0)
    conditions, by_kind = [], {}
    for kind in kinds:  # each kind's probe restarts the progress bar at 0 of its own parts
        rows = wordings(kind, rng)
        n = max(MIN_EPISODES[kind], round(episodes * SHARE[kind]))
        with warnings.catch_warnings():  # the controls are meant to hold words the model does not know
            warnings.simplefilter("ignore", InputWarning)
            figures = _figures(kind, probe, population, n, seed, [r["prompt"] for r in rows[1:]])
        conditions += [{"kind": kind.name, **row, "figure": fig} for row, fig in zip(rows, figures, strict=True)]
        by_kind[kind.name] = _kind_result(kind, rows, figures) | {"episodes": n}
    out = {"probe": "language", "population": population, "agents": agents, "episodes": episodes, "seed": seed,
           "conditions": conditions, "kinds": by_kind}
    if pairs:
        out["minimal_pairs"] = minimal_pairs(probe, population, episodes, seed, agents)
    out["summary"] = _summary(out)
    out["targets"] = {"minimal_pair_accuracy": 0.95, "held_out_ratio_min_OTHER": 0.95, "held_out_ratio_min_SELF": 0.95,
                      "held_out_margin_gap_SECOND": 0.01, "filler_change_max_OTHER": 0.02,
                      "filler_change_max_SELF": 0.02}
    return out


def pool(parts: list[dict]) -> dict:
    """One result from language results of several seeds (same checkpoint, wordings and scale):
    each figure is the scene-weighted mean of the seeds' figures, with a 95% interval from the
    seeds' intervals (each read as mean +- 1.96 standard errors; seeds' scenes are independent);
    a control row, whose nonsense or scrambled wording each seed draws anew, names them all;
    verdicts and the summary are recomputed from the pooled figures. ``per_seed`` keeps each
    seed's summary. Pooled results pool again as their seeds would (same means and intervals)."""
    first = parts[0]

    def shape(r):
        return [(c["kind"], c["role"], c.get("family")) for c in r["conditions"]]

    if any(shape(p) != shape(first) for p in parts):
        raise ConfigError("pooling language results needs the same wordings in each; rerun them with one version")
    # the controls are drawn per seed: a pooled control row names each seed's wording
    conditions = [{**rows[0], "prompt": " / ".join(dict.fromkeys(r["prompt"] for r in rows)),
                   "figure": _pool_figures([r["figure"] for r in rows])}
                  for rows in zip(*(p["conditions"] for p in parts), strict=True)]
    seeds = [s for p in parts for s in (p["seed"] if isinstance(p["seed"], list) else [p["seed"]])]
    if all("seconds" in p for p in parts):  # the probing time of every seed
        first = {**first, "seconds": round(sum(p["seconds"] for p in parts), 2)}
    out = {**first, "seed": seeds, "episodes": sum(p["episodes"] for p in parts),
           "conditions": conditions, "kinds": {}}
    for name in first["kinds"]:
        rows = [c for c in conditions if c["kind"] == name]
        out["kinds"][name] = _kind_result(Kind[name], rows, [c["figure"] for c in rows]) | {
            "episodes": sum(p["kinds"][name]["episodes"] for p in parts)}
    if "minimal_pairs" in first:
        mps = [p["minimal_pairs"] for p in parts]
        out["minimal_pairs"] = {**mps[0], "accuracy": _pool_figures([m["accuracy"] for m in mps]),
                                "members": {n: _pool_figures([m["members"][n] for m in mps]) for n in mps[0]["members"]},
                                "situations": sum(m["situations"] for m in mps), "left_out": sum(m["left_out"] for m in mps),
                                "out_of_reach": sum(m.get("out_of_reach", 0) for m in mps)}
        for key in ("label_gap", "model_gap", "label_noise"):  # the seeds' medians, weighted by their situations
            if all(key in m for m in mps):
                out["minimal_pairs"][key] = {
                    n: _weighted([(m[key][n], m["members"][n]["n"]) for m in mps]) for n in mps[0][key]}
        for key in ("ceiling", "bayes_other"):
            if all(key in m for m in mps):
                out["minimal_pairs"][key] = _pool_figures([m[key] for m in mps])
    out["summary"] = _summary(out)
    out["per_seed"] = [e for p in parts for e in p.get("per_seed", [{"seed": p["seed"], "summary": p["summary"]}])]
    return out


def _weighted(pairs: list[tuple]) -> float | None:
    pairs = [(v, n) for v, n in pairs if v is not None and n]
    return float(sum(v * n for v, n in pairs) / sum(n for _, n in pairs)) if pairs else None


def _pool_figures(figs: list[dict]) -> dict:
    """Scene-weighted mean of figures, its interval by a normal approximation from theirs (figures
    without a mean or an interval are left out)."""
    figs = [f for f in figs if f["mean"] is not None and f.get("n") and None not in f["ci95"]]
    if not figs:
        return {"mean": None, "ci95": [None, None], "n": 0}
    n = np.array([f["n"] for f in figs], dtype=np.float64)
    w = n / n.sum()
    mean = float(w @ np.array([f["mean"] for f in figs]))
    se = np.array([(f["ci95"][1] - f["ci95"][0]) / (2 * 1.96) for f in figs])
    half = 1.96 * float(np.sqrt(np.sum((w * se) ** 2)))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(n.sum())}


def _summary(r: dict) -> dict:
    s = {}
    for name, k in r["kinds"].items():
        s[f"canonical_{name}"] = k["canonical"]
        ratios = [h["ratio"] for h in k["held_out"] if h["ratio"] is not None]
        gaps = [h["difference"] for h in k["held_out"] if h["difference"] is not None]
        if name in ("OTHER", "SELF"):
            s[f"held_out_ratio_min_{name}"] = min(ratios) if ratios else None
        elif gaps:
            s[f"held_out_{'margin_gap' if name == 'SECOND' else 'difference'}_{name}"] = (
                max(abs(g) for g in gaps) if name == "SECOND" else max(gaps, key=abs))
        s[f"filler_change_max_{name}"] = k["filler_max_change"]
    if "minimal_pairs" in r:
        s["minimal_pair_accuracy"] = r["minimal_pairs"]["accuracy"]["mean"]
        if "ceiling" in r["minimal_pairs"]:
            s["minimal_pair_ceiling"] = r["minimal_pairs"]["ceiling"]["mean"]
    return s


# --- plot and report -----------------------------------------------------------------------------


ROLE_STYLE = {"canonical": "black", "held_out": "tab:blue", "nonsense": "tab:red", "scrambled": "tab:orange",
              "filler_before": "tab:grey", "filler_after": "silver"}


def plot(result: dict, path: Path):
    """One panel per kind: the figure of every wording (canonical black, held-out blue, nonsense
    red, scrambled orange, fillers grey) with 95% intervals and the canonical's interval shaded;
    the last panel the minimal pairs' discrimination per member against chance and the target."""
    kinds = list(result.get("kinds", {}))
    fig, panels = axes(len(kinds) + 1)
    panels = np.atleast_1d(panels)
    for ax, name in zip(panels, kinds, strict=False):
        rows = [c for c in result["conditions"] if c["kind"] == name]
        for i, c in enumerate(rows):
            m = c["figure"]["mean"]
            if m is None:
                continue
            lo, hi = c["figure"]["ci95"]
            ax.errorbar([i], [m], yerr=[[m - lo], [hi - m]] if lo is not None else None, fmt="o",
                        color=ROLE_STYLE[c["role"]], capsize=2, markersize=4,
                        label=c["role"] if c["role"] not in [r["role"] for r in rows[:i]] else None)
        canon = rows[0]["figure"] if rows else {}
        if canon.get("ci95") and canon["ci95"][0] is not None:
            ax.axhspan(*canon["ci95"], color="black", alpha=0.08)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_xlabel("wording")
        ax.set_ylabel(result["kinds"][name]["figure"], fontsize=7)
    last = panels[len(kinds)]
    mp = result.get("minimal_pairs")
    if mp:
        names = list(mp["members"])
        vals = [mp["members"][n]["mean"] or 0.0 for n in names]
        last.bar(names, vals, color="tab:blue", label="per member")
        last.axhline(mp["accuracy"]["mean"] or 0.0, color="black", label="discrimination accuracy")
        last.axhline(mp["chance"], color="grey", linestyle=":", label="chance")
        if mp.get("ceiling") and mp["ceiling"]["mean"] is not None:
            last.axhline(mp["ceiling"]["mean"], color="tab:green", linestyle="--", label="best reader that watches k")
        bound = result.get("targets", {}).get("minimal_pair_accuracy")
        if bound is not None:
            last.axhline(bound, color="crimson", linestyle=(0, (6, 3)), label=f"target: >= {bound:g}")
        last.set_ylim(0, 1.05)
        last.set_title("minimal pairs", fontsize=9)
    return save(fig, list(panels), result, path)


def section(r: dict) -> list[str]:
    """Per kind a table of its wordings and the verdicts in plain words; then the minimal pairs."""
    s, targets = r.get("summary", {}), r.get("targets", {})
    lines = ["Every wording runs on the same scenes as its kind's canonical template (the first row).", ""]
    for name, k in r.get("kinds", {}).items():
        rows = [c for c in r["conditions"] if c["kind"] == name]
        lines += [f"### {name}: {k['figure']}", "", k["explain"], "",
                  "| wording | role | figure |", "|---|---|---|"]
        lines += [f"| `{c['prompt']}` | {c['role']}{' ' + c['family'] if c.get('family') else ''} | {fmt_ci(c['figure'])} |"
                  for c in rows]
        lines.append("")
        for h in k["held_out"]:
            if h["ratio"] is not None:
                bound = targets.get(f"held_out_ratio_min_{name}")
                lines.append(f"- Held-out family `{h['family']}` reaches {fmt(h['ratio'])} of the canonical template's "
                             f"figure ({fmt(h['mean'])} against {fmt(k['canonical'])})"
                             + (f"; target >= {bound:g}: {'met' if h['ratio'] >= bound else 'MISSED'}." if bound else "."))
            else:
                bound = targets.get(f"held_out_margin_gap_{name}")
                within = "" if bound is None or h["difference"] is None else (
                    f"; target within {bound:g}: {'met' if abs(h['difference']) <= bound else 'MISSED'}")
                lines.append(f"- Held-out family `{h['family']}`: {fmt(h['mean'])} against the canonical "
                             f"{fmt(k['canonical'])} (difference {fmt(h['difference'])}){within}.")
        bound = targets.get(f"filler_change_max_{name}")
        lines.append(f"- Optional words before or after change the figure by at most {fmt(k['filler_max_change'])}"
                     + (f" (`{k['filler_worst']}`)" if k["filler_worst"] else "")
                     + (f"; target <= {bound:g}: {'met' if (k['filler_max_change'] or 0) <= bound else 'MISSED'}."
                        if bound is not None and k["filler_max_change"] is not None else "."))
        lines += [f"- {c['words']}" for c in k["controls"]]
        lines.append("")
    mp = r.get("minimal_pairs")
    if mp:
        lines += ["### Minimal pairs", "",
                  f"Prompts that share words and the number but differ in meaning (e.g. {', '.join(repr(x) for x in mp['example'])}), "
                  f"asked in the same situations after {mp['K']} steps. A case is discriminated when the model's "
                  "output is closer (KL) to its own meaning's label than to every other member's label; chance is "
                  f"about {mp['chance']:g}. {mp['situations']} situations ({mp['left_out']} left out: "
                  f"{mp.get('out_of_reach', 0)} where the RETURN outcome asked is out of reach, so it has no label, "
                  "the rest where two members' labels agree). RETURN's label is what labelling trains on: the "
                  "action taken by an agent that then reaches the outcome, estimated from continuations of the scene.",
                  "", "| member | discriminated | its label to the nearest other label (median KL) | "
                  "the model to its own label (median KL) |", "|---|---|---|---|"]
        lines += [f"| {n} | {fmt_ci(v)} | {fmt(mp.get('label_gap', {}).get(n))} | {fmt(mp.get('model_gap', {}).get(n))} |"
                  for n, v in mp["members"].items()]
        noise = mp.get("label_noise", {}).get("RETURN")
        lines += ["", "A member whose label lies closer to another member's label than the model's answers lie to "
                      "their labels can be missed by a model that reads the words right: the two meanings ask for "
                      "nearly the same moves in these situations."
                  + (f" RETURN's label is estimated from {mp.get('rollouts')} continuations per first move; two "
                     f"estimates from either half lie {fmt(noise)} apart (median KL), so the label's own noise adds "
                     "about a quarter of that to the model's distance to it." if noise is not None else "")]
        lines += ["", f"Discrimination accuracy {fmt_ci(mp['accuracy'])}: "
                      f"{verdict(s.get('minimal_pair_accuracy'), targets.get('minimal_pair_accuracy'))}.", ""]
        if mp.get("ceiling"):
            lines += [f"The best reader that must learn agent k by watching (the exact Bayes observer's prediction "
                      f"after k's {mp['K']} steps for OTHER, every other member's exact label) reaches "
                      f"{fmt_ci(mp['ceiling'])}: its OTHER member is discriminated {fmt_ci(mp['bayes_other'])} of the "
                      "time, since after a few steps an estimate of k is often as close to another member's label as "
                      "to k's own policy.", ""]
    return lines
