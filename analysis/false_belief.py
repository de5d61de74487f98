"""Probe ``false_belief``: the Sally-Anne test of ToMnet (Rabinowitz et al. 2018), with believers.

Scenes (one per layout, all under partial view, ``view_radius`` = 3 by default, an 11 x 11 grid): agent 1, the
subject, is a ``Believer`` that likes colour c; agent 0, the observer, stands still where its view
covers the subject and every cell that matters. The model sits in the observer's seat and is
asked, as in training, "behave as agent 1" in the subject's situation: its answer is its
prediction of the subject's next move, from what the observer saw. The layout (on a row, then
flipped and transposed at random):

- the subject S at (R, C); a lure (the second gem of colour c) at (R, C - k), k in ``LURES``;
- the favourite gem F (colour c) at L_old = (R - r + 1, C + r - 1), seen by S at step 0;
- the swap partner O (another colour) at L_new = (R + r - 1, C + r - 1);
- the observer at (R + 1, C), whose view covers all of these; a gem of a third colour parked at
  (R + r + 1, C - k); every other gem two rows or more away from S's row.

S goes for the nearer lure first (k steps away from F), which takes L_old and L_new out of its
view; at step k the lure (or, if S already took it, its respawn) trades places with the parked
gem, so nothing of colour c is left near S but what it remembers; then a believer turns back for
F where it last saw it. F and O are swapped once:

- early, at step 1, when S still sees both cells (true belief), or
- late, at step s in k..k+2, when S is away (false belief while both cells are out of view).

For every late swap the model, the exact Bayes observer and the truth give P(old): the probability
of the subject's next move bringing it closer to L_old, averaged over the ``WINDOW`` steps from s;
the same steps of the early-swap scene of the same layout (identical up to step 1, same seeds)
give the true-belief baseline. The false-belief effect is the paired difference
P(old | unseen swap) - P(old | seen swap), on layouts where the late swap at s = k was out of the
subject's view and the early one inside it. ``effect_ratio`` is model / Bayes (bootstrap over
layouts). The same layouts with a ``Memoryless`` subject (same preferences, no memory) give the
control's effect, which should vanish. The curve: the paired difference against the subject's
Chebyshev distance to L_old at the late swap (ToMnet's figure); it should jump above r.

The Bayes observer (``BeliefObserver``) knows the design (the subject's family and liked colour)
and not its style; it tracks the subject's memory from the geometry of its view (the cells within
r of the subject at each step, ``track_memory``) and updates a posterior over styles from the
subject's observed actions. Averaged over layouts drawn from its prior, its P(old) equals the
truth's in expectation, so an observer that knows the subject's memory and persona (the truth)
scores a ratio near 1, and one that ignores views (it takes the subject to know where every gem
is) scores about 0: ``tests/test_belief.py`` checks both.

Beside it, ``bayes_watching``: the same exact observer not told the family (believer and
memoryless evenly a priori). The model is never told it either, and in these scenes the two
families act alike until the late swap, so Bayes watching reaches only about 0.69 of Bayes's effect
with a control effect near 0.12 (``summary.watching_ceiling``, ``summary.effect_ratio_watching``):
what any observer that must learn the family by watching can reach here (``docs/results.md``).

The scenes are the probe's own design; the ``population`` argument is only recorded in the result.
The view radius must be one the model was trained with for its answer to mean anything (the
reference was trained on full view; ``lab-belief`` data generated with ``--view-radius 3`` matches
the default scenes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirrorhall import streams
from mirrorhall.agents.bayes import BeliefHypotheses, BeliefObserver, post_move_cells, track_memory
from mirrorhall.agents.personas import STYLES, Believer, Memoryless, Species
from mirrorhall.agents.scene import run_scene
from mirrorhall.analysis.common import Scene, mean_ci
from mirrorhall.analysis.reporting import axes, errorbars, fmt, fmt_ci, save
from mirrorhall.envs.core import WorldConfig, WorldCore, WorldEvent

VIEW_RADIUS = 3
LURES = (2, 3)
"""Steps from the subject to the lure; the late swap happens k, k + 1 or k + 2 steps in."""
LATE = (0, 1, 2)
"""Late swaps at step k + j for each j."""
WINDOW = 3
"""Steps over which P(old) is averaged, from the step of the late swap."""
SUBJECT, OBSERVER = 1, 0
PROMPT = "behave as agent {k}"
TARGET_RATIO = 0.9
"""The issue's acceptance: effect_model / effect_bayes >= 0.9, with its interval."""
STAY = Species((1.0, 0.0, 0.0, 0.0, 0.0), 1.0)
"""The observer does not move: its view covers the scene throughout."""


def grid_size(view_radius: int) -> int:
    """The side of the square grid: 11 (the training size) up to view radius 3, more beyond."""
    return max(11, 2 * view_radius + 5)


def world_config(n_colors: int, view_radius: int = VIEW_RADIUS) -> WorldConfig:
    """The probe's world: 2 agents, 2 gems per colour, partial view; ``ValueError`` for a radius
    the layout cannot use."""
    if isinstance(view_radius, bool) or not isinstance(view_radius, int) or not 3 <= view_radius <= 8:
        raise ValueError(f"view_radius must be an integer in 3..8 for the false-belief scenes, got {view_radius!r}")
    if n_colors < 3:
        raise ValueError(f"the false-belief scenes need at least 3 gem colours, got {n_colors}")
    steps = max(LURES) + max(LATE) + WINDOW
    size = grid_size(view_radius)
    return WorldConfig(n_agents=2, width=size, height=size, n_colors=n_colors, gems_per_color=2,
                       view_radius=view_radius, max_cycles=steps + 1)


def draw_layouts(n: int, config: WorldConfig, rng: np.random.Generator) -> list[dict]:
    """``n`` layouts: colours, lure distance, subject style, cells (after a random flip/transpose)."""
    r, c_n, size = config.view_radius, config.n_colors, config.width
    out = []
    for _ in range(n):
        color = int(rng.integers(c_n))
        other = int(rng.integers(c_n - 1))
        other += other >= color
        k = int(LURES[rng.integers(len(LURES))])
        style = tuple(STYLES)[rng.integers(len(STYLES))]
        row = size // 2
        lo, hi = 1 + k, size - 2 - (r - 1)  # the lure and L_old stay inside the border
        col = int(rng.integers(lo, hi + 1))
        flip_r, flip_c, transpose = (bool(x) for x in rng.integers(2, size=3))
        cells = {"subject": (row, col), "lure": (row, col - k), "old": (row - r + 1, col + r - 1),
                 "new": (row + r - 1, col + r - 1), "observer": (row + 1, col),
                 "park": (row + r + 1, col - k)}
        taken = set(cells.values())
        band = [(i, j) for i in range(1, size - 1) for j in range(1, size - 1)
                if abs(i - row) >= 2 and (i, j) not in taken]
        pick = rng.permutation(len(band))[: config.n_gems - 4]
        cells["others"] = [band[p] for p in pick]

        def t(cell, flip_r=flip_r, flip_c=flip_c, transpose=transpose):
            i, j = cell
            i, j = (size - 1 - i if flip_r else i), (size - 1 - j if flip_c else j)
            return (j, i) if transpose else (i, j)

        placed = {name: ([t(x) for x in v] if name == "others" else t(v)) for name, v in cells.items()}
        out.append({"color": color, "other": other, "k": k, "style": style, **placed})
    return out


def gem_roles(layout: dict, config: WorldConfig) -> dict[str, int]:
    """Gem indices: F (the favourite, 2c), the lure (2c + 1), O (the swap partner, 2o) and the
    parked gem (the first gem of a third colour), which trades places with the lure at step k."""
    per = config.gems_per_color
    c, o = layout["color"], layout["other"]
    third = next(x for x in range(config.n_colors) if x not in (c, o))
    return {"F": c * per, "lure": c * per + 1, "O": o * per, "park": third * per}


def _gem_cells(layout: dict, config: WorldConfig) -> np.ndarray:
    """(G, 2) every gem's cell at step 0."""
    roles = gem_roles(layout, config)
    where = {roles["F"]: layout["old"], roles["lure"]: layout["lure"], roles["O"]: layout["new"],
             roles["park"]: layout["park"]}
    cells = np.zeros((config.n_gems, 2), np.int64)
    rest = iter(layout["others"])
    for g in range(config.n_gems):
        cells[g] = where[g] if g in where else next(rest)
    return cells


def schedule(layout: dict, config: WorldConfig, swap_step: int) -> tuple[WorldEvent, ...]:
    """A scene's interventions: F and O swap at ``swap_step``; at step k the lure (or its respawn)
    trades places with the parked gem, far out of the subject's view, so that nothing of colour c
    is left near the subject but what it remembers."""
    roles = gem_roles(layout, config)
    events = [WorldEvent(int(swap_step), "swap", roles["F"], other=roles["O"]),
              WorldEvent(int(layout["k"]), "swap", roles["lure"], other=roles["park"])]
    return tuple(sorted(events, key=lambda e: e.step))


def run_layouts(layouts: list[dict], config: WorldConfig, family: str, swap_steps: list[int], seed: int) -> Scene:
    """One batched scene: world b is layout b with a subject of ``family`` and its swap at
    ``swap_steps[b]``."""
    cls = Believer if family == "believer" else Memoryless
    rows = [[STAY, cls(config.color_names[lay["color"]], "none", lay["style"])] for lay in layouts]
    events = [schedule(lay, config, s) for lay, s in zip(layouts, swap_steps, strict=True)]

    def place(state):
        for b, lay in enumerate(layouts):
            state.agent_pos[b, OBSERVER] = lay["observer"]
            state.agent_pos[b, SUBJECT] = lay["subject"]
            state.gem_pos[b] = _gem_cells(lay, config)

    ep = run_scene(config, rows, config.max_cycles - 1, seed, events=events, place=place)
    return Scene.from_episode(ep)


# --- observers: each maps a scene to (T, B, 5) predictions of the subject's moves -----------------


def truth(scene: Scene, layouts: list[dict], family: str) -> np.ndarray:
    """The subject's exact distributions: an observer that knows its persona and its memory."""
    return scene.episode.probs[:, :, SUBJECT]


def bayes(scene: Scene, layouts: list[dict], family: str, ignore_views: bool = False,
          families: tuple[str, ...] | None = None) -> np.ndarray:
    """The exact Bayes observer: the subject's memory from its view, a posterior over its style
    (family and liked colour known by design). ``ignore_views``: a blind-to-views observer that
    takes the subject to know where every gem is (a memory of the whole grid, now). ``families``:
    the families it weighs, evenly a priori (default: the subject's own, known)."""
    cfg = scene.config
    core = WorldCore(cfg)
    hyp = BeliefHypotheses.grid(cfg, families=(family,) if families is None else families)
    obs = BeliefObserver(hyp)
    b = len(layouts)
    log_post = obs.prior((b,))
    liked = np.array([lay["color"] for lay in layouts])
    with np.errstate(divide="ignore"):
        log_post = np.where(hyp.likes[None, :] == liked[:, None], log_post, -np.inf)
    subject = np.full(b, SUBJECT)
    if ignore_views:
        full = WorldCore(WorldConfig(**{**cfg.__dict__, "view_radius": None}))
        memories = track_memory(full, scene.states, subject)
    else:
        memories = track_memory(core, scene.states, subject)
    steps = scene.episode.steps
    out = np.zeros((steps, b, 5))
    rows = np.arange(b)
    for t in range(steps):
        sit = scene.situation(t, rows, subject)
        after = post_move_cells(core, scene.states[t], subject)
        out[t] = obs.predictive(log_post, sit, memories[t], after)
        log_post = obs.update(log_post, sit, memories[t], after, scene.episode.actions[t, :, SUBJECT])
    return out


def blind_to_views(scene: Scene, layouts: list[dict], family: str) -> np.ndarray:
    return bayes(scene, layouts, family, ignore_views=True)


def bayes_watching(scene: Scene, layouts: list[dict], family: str) -> np.ndarray:
    """The exact Bayes observer that, like the model, is not told the subject's family: believer
    and memoryless weighed evenly at first, then by what the subject did (liked colour still
    known). Before the swap both families act alike in these scenes, so this is the ceiling of any
    observer that must tell a believer by watching it here, and its control effect is not 0."""
    return bayes(scene, layouts, family, families=("believer", "memoryless"))


def model_observer(probe):
    """The model in the observer's seat, asked "behave as agent 1" in the subject's situation."""
    def predict(scene: Scene, layouts: list[dict], family: str, steps=None) -> np.ndarray:
        b = len(layouts)
        out = np.full((scene.episode.steps, b, 5), np.nan)
        w = np.arange(b)
        for t in (range(scene.episode.steps) if steps is None else steps):
            out[t] = probe.query(scene, w, np.full(b, OBSERVER), np.full(b, t), [PROMPT.format(k=SUBJECT)] * b,
                                 situation=np.full(b, SUBJECT))
        return out
    return predict


# --- the measurement -------------------------------------------------------------------------------


def p_old(scene: Scene, probs: np.ndarray, layouts: list[dict], t: int) -> np.ndarray:
    """(B,) probability mass of the moves that bring the subject closer to L_old at step t."""
    core = WorldCore(scene.config)
    pos = scene.episode.agent_pos[t, :, SUBJECT]  # (B, 2)
    old = np.array([lay["old"] for lay in layouts])  # (B, 2)
    after = core.move_targets(pos)  # (B, 5, 2)
    closer = np.abs(after - old[:, None]).sum(-1) < np.abs(pos - old).sum(-1)[:, None]  # (B, 5)
    return (probs[t] * closer).sum(-1)


def chebyshev_to_old(scene: Scene, layouts: list[dict], t: np.ndarray) -> np.ndarray:
    """(B,) the subject's Chebyshev distance to L_old at step t[b] (it sees L_old iff <= r)."""
    b = len(layouts)
    pos = scene.episode.agent_pos[t, np.arange(b), SUBJECT]
    old = np.array([lay["old"] for lay in layouts])
    return np.abs(pos - old).max(-1)


def ratio_ci(num, den, n_boot: int = 1000, seed: int = 0) -> dict:
    """mean(num) / mean(den) with a 95% bootstrap interval, resampling layouts jointly."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    if num.size == 0 or abs(den.mean()) < 1e-9:
        return {"mean": None, "ci95": [None, None], "n": int(num.size)}
    rng = streams.rng(streams.BOOTSTRAP, seed)
    idx = rng.integers(num.size, size=(n_boot, num.size))
    bn, bd = num[idx].mean(1), den[idx].mean(1)
    ok = np.abs(bd) > 1e-9
    lo, hi = np.percentile(bn[ok] / bd[ok], [2.5, 97.5])
    return {"mean": float(num.mean() / den.mean()), "ci95": [float(lo), float(hi)], "n": int(num.size)}


def measure(layouts: list[dict], config: WorldConfig, seed: int, observers: dict, progress=None) -> dict:
    """Run every scene (both families, the early and every late swap) and score ``observers``
    (name -> function(scene, layouts, family) -> (T, B, 5)); "bayes" must be among them."""
    r = config.view_radius
    b = len(layouts)
    k = np.array([lay["k"] for lay in layouts])
    scene_seed = streams.int_seed(streams.PROBE_SCENES["false_belief"], seed, 0)
    out = {}
    for family in ("believer", "memoryless"):
        early = run_layouts(layouts, config, family, [1] * b, scene_seed)
        seen_early = chebyshev_to_old(early, layouts, np.ones(b, np.int64)) <= r
        preds_early = {name: fn(early, layouts, family) for name, fn in observers.items()}
        rows = []  # one per (late offset j): paired differences per observer, distances
        for j in LATE:
            s = k + j
            late = run_layouts(layouts, config, family, list(s), scene_seed)
            preds_late = {name: fn(late, layouts, family) for name, fn in observers.items()}
            dist = chebyshev_to_old(late, layouts, s)
            diffs = {}
            for name in observers:
                diffs[name] = _window(late, preds_late[name], layouts, s) - _window(early, preds_early[name], layouts, s)
            rows.append({"j": j, "distance": dist, "diffs": diffs})
            if progress:
                progress()
        first = rows[0]
        valid = seen_early & (first["distance"] > r)
        out[family] = {"valid": valid, "rows": rows}
    return out


def _window(scene: Scene, probs: np.ndarray, layouts: list[dict], start: np.ndarray) -> np.ndarray:
    """(B,) P(old) averaged over steps start[b] .. start[b] + WINDOW - 1 of world b."""
    vals = np.stack([p_old(scene, probs, layouts, t) for t in range(scene.episode.steps)])  # (T, B)
    b = np.arange(len(layouts))
    return np.mean([vals[start + i, b] for i in range(WINDOW)], axis=0)


def control_consistent(model: dict, bayes: dict) -> bool:
    """Whether the model's control effect agrees with Bayes's: its mean inside Bayes's interval,
    or Bayes's mean inside its own. (With a memoryless subject the paired scenes are identical for
    Bayes, whose control effect is then exactly 0 with a zero-width interval; the model, which saw
    the swap happen at different steps, is judged by whether its own interval holds that 0.)"""
    m, b = model.get("mean"), bayes.get("mean")
    if m is None or b is None:
        return False
    (blo, bhi), (mlo, mhi) = bayes["ci95"], model["ci95"]
    return bool(blo <= m <= bhi or mlo <= b <= mhi)


def summarise(measured: dict, config: WorldConfig, names=("model", "bayes", "truth")) -> dict:
    """The result's conditions, curve and summary from ``measure``'s output."""
    r = config.view_radius
    conditions, curve = [], []
    effects = {}
    for family in ("believer", "memoryless"):
        m = measured[family]
        valid, first = m["valid"], m["rows"][0]
        row = {"subject": family, "layouts": int(valid.sum())}
        for name in names:
            if name in first["diffs"]:
                row[f"effect_{name}"] = mean_ci(first["diffs"][name][valid])
                effects[(family, name)] = first["diffs"][name][valid]
        conditions.append(row)
        dist = np.concatenate([x["distance"] for x in m["rows"]])
        for d in np.unique(dist):
            sel = dist == d
            point = {"subject": family, "distance": int(d), "seen": bool(d <= r)}
            for name in names:
                if name in first["diffs"]:
                    point[f"effect_{name}"] = mean_ci(np.concatenate([x["diffs"][name] for x in m["rows"]])[sel])
            curve.append(point)
    bel, ctl = conditions[0], conditions[1]
    summary = {}
    for name in names:
        if f"effect_{name}" in bel:
            summary[f"effect_{name}"] = bel[f"effect_{name}"]["mean"]
            summary[f"effect_{name}_ci95"] = bel[f"effect_{name}"]["ci95"]
            summary[f"control_effect_{name}"] = ctl[f"effect_{name}"]["mean"]
            summary[f"control_effect_{name}_ci95"] = ctl[f"effect_{name}"]["ci95"]
    if ("believer", "model") in effects:
        ratio = ratio_ci(effects[("believer", "model")], effects[("believer", "bayes")])
        summary["effect_ratio"] = ratio["mean"]
        summary["effect_ratio_ci95"] = ratio["ci95"]
        summary["control_within_bayes_interval"] = control_consistent(ctl["effect_model"], ctl["effect_bayes"])
        if ("believer", "bayes_watching") in effects:
            ratio = ratio_ci(effects[("believer", "model")], effects[("believer", "bayes_watching")])
            summary["effect_ratio_watching"] = ratio["mean"]
            summary["effect_ratio_watching_ci95"] = ratio["ci95"]
            ceiling = ratio_ci(effects[("believer", "bayes_watching")], effects[("believer", "bayes")])
            summary["watching_ceiling"] = ceiling["mean"]
            summary["watching_ceiling_ci95"] = ceiling["ci95"]
    return {"conditions": conditions, "curve": curve, "summary": summary}


def evaluate(model_fn, n_colors: int = 4, episodes: int = 24, seed: int = 0, view_radius: int = VIEW_RADIUS,
             progress=None) -> dict:
    """The probe with any observer in the model's place: ``model_fn(scene, layouts, family)`` ->
    (T, B, 5) (``model_observer(probe)`` for the model; the tests pass oracles)."""
    config = world_config(n_colors, view_radius)
    layouts = draw_layouts(episodes, config, streams.rng(streams.PROBE_DRAWS["false_belief"], seed))
    observers = {"model": model_fn, "bayes": bayes, "bayes_watching": bayes_watching, "truth": truth}
    measured = measure(layouts, config, seed, observers, progress)
    return {"view_radius": view_radius, "window": WINDOW, "lures": list(LURES),
            **summarise(measured, config, names=("model", "bayes", "bayes_watching", "truth"))}


def run(probe, population: str, episodes: int = 24, seed: int = 0, view_radius: int = VIEW_RADIUS) -> dict:
    probe.expect(2 * len(LATE))
    res = evaluate(model_observer(probe), probe.model.config.n_colors, episodes, seed, view_radius,
                   progress=probe.tick)
    return {"probe": "false_belief", "population": population, "agents": 2, "episodes": episodes, "seed": seed,
            "prompt": PROMPT.format(k=SUBJECT), **res,
            "targets": {"effect_ratio": TARGET_RATIO,
                        "control": "the model's control effect inside the interval of Bayes's"}}


def plot(result: dict, path: Path):
    """Left: the false-belief effect of the model, Bayes and the truth, believer subjects beside
    the memoryless control. Right: the effect against the subject's distance to L_old at the swap
    (ToMnet's figure), with the view radius marked."""
    fig, (left, right) = axes(2)
    cond = result["conditions"]
    xs = np.arange(len(cond))
    named = (("model", "o"), ("bayes", "s"), ("bayes_watching", "D"), ("truth", "^"))
    for off, (name, style) in zip((-0.225, -0.075, 0.075, 0.225), named, strict=True):
        if f"effect_{name}" in cond[0]:
            errorbars(left, xs + off, cond, f"effect_{name}", fmt=style, label=name)
    left.axhline(0.0, color="grey", linewidth=1, linestyle=":")
    left.set_xticks(xs, [c["subject"] for c in cond])
    left.set_ylabel("P(old | unseen swap) - P(old | seen swap)")
    bel = [c for c in result["curve"] if c["subject"] == "believer"]
    for name, style in (("model", "o-"), ("bayes", "s--"), ("bayes_watching", "D-."), ("truth", "^:")):
        if bel and f"effect_{name}" in bel[0]:
            errorbars(right, [c["distance"] for c in bel], bel, f"effect_{name}", fmt=style, label=name)
    r = result.get("view_radius")
    if r is not None:
        right.axvline(r + 0.5, color="grey", linestyle=":", linewidth=1, label=f"view radius {r}")
    right.set_xlabel("subject's distance to the old location at the swap (cells)")
    right.set_ylabel("effect (believer subjects)")
    return save(fig, [left, right], result, path)


def section(r: dict) -> list[str]:
    """The table, the curve and the verdicts (ratio >= TARGET_RATIO; control inside Bayes's interval)."""
    s = r.get("summary", {})
    rows = [f"False-belief effect: P(old | swap out of the subject's view) - P(old | swap in view), P(old) the "
            f"probability that the subject's next move brings it closer to where its favourite gem was, over "
            f"{r.get('window')} steps from the swap; paired scenes, means over layouts with 95% intervals. "
            "Bayes: the exact observer told the subject's family; Bayes watching: the exact observer that, like the "
            "model, must tell a believer from a memoryless subject by watching it; truth: the subject's own "
            "distributions.", "",
            "| subject | layouts | effect: model | effect: Bayes | effect: Bayes watching | effect: truth |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {c['subject']} | {c.get('layouts')} | {fmt_ci(c.get('effect_model', {}))} | "
             f"{fmt_ci(c.get('effect_bayes', {}))} | {fmt_ci(c.get('effect_bayes_watching', {}))} | "
             f"{fmt_ci(c.get('effect_truth', {}))} |" for c in r["conditions"]]
    rows += ["", "Effect against the subject's distance to the old location at the swap (believers; "
             f"view radius {r.get('view_radius')}):", "",
             "| distance | seen | model | Bayes | Bayes watching | truth |", "|---|---|---|---|---|---|"]
    rows += [f"| {c['distance']} | {'yes' if c['seen'] else 'no'} | {fmt_ci(c.get('effect_model', {}))} | "
             f"{fmt_ci(c.get('effect_bayes', {}))} | {fmt_ci(c.get('effect_bayes_watching', {}))} | "
             f"{fmt_ci(c.get('effect_truth', {}))} |"
             for c in r["curve"] if c["subject"] == "believer"]
    ratio, ci = s.get("effect_ratio"), s.get("effect_ratio_ci95", [None, None])
    met = ratio is not None and ci[0] is not None and ci[0] >= TARGET_RATIO
    ctl = s.get("control_within_bayes_interval")
    rows += ["", f"Target: effect ratio model / Bayes >= {TARGET_RATIO:g} with its interval: "
                 f"{'met' if met else 'MISSED'} (ratio {fmt(ratio)} [{fmt(ci[0])}, {fmt(ci[1])}]). "
                 f"Control (memoryless subject): the model's effect {fmt(s.get('control_effect_model'))} "
                 f"[{fmt(s.get('control_effect_model_ci95', [None])[0])}, "
                 f"{fmt(s.get('control_effect_model_ci95', [None, None])[1])}] against Bayes's "
                 f"{fmt(s.get('control_effect_bayes'))} [{fmt(s.get('control_effect_bayes_ci95', [None])[0])}, "
                 f"{fmt(s.get('control_effect_bayes_ci95', [None, None])[1])}] (each mean inside the other's "
                 f"interval, either way): {'met' if ctl else 'MISSED'}."]
    if s.get("watching_ceiling") is not None:
        wc, wci = s["watching_ceiling"], s.get("watching_ceiling_ci95", [None, None])
        rw, rwci = s.get("effect_ratio_watching"), s.get("effect_ratio_watching_ci95", [None, None])
        rows += ["", f"What watching can tell here: Bayes watching / Bayes = {fmt(wc)} [{fmt(wci[0])}, {fmt(wci[1])}], "
                     f"with a control effect of {fmt(s.get('control_effect_bayes_watching'))}: before the swap a "
                     "believer and a memoryless subject act alike in these scenes, so no observer that must tell "
                     "them apart by watching reaches the target. The model against it: "
                     f"{fmt(rw)} [{fmt(rwci[0])}, {fmt(rwci[1])}]."]
    return rows + [""]
