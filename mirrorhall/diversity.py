"""The diversity experiment: does training on more persona families help with one never seen?

For a held-out family H and the other families F1 .. Fm (in ``FAMILIES`` order, H left out), point
n (n = 0 .. m) trains the same model, from the same seed, on the same number of samples, drawn from
``lab+F1+...+Fn`` (``lab`` alone at n = 0; ``agents/populations.py``), and then probes it:

- **held out**: the imitate probe with pi_test drawn from H, scored against H's exact Bayes observer
  (fraction of attainable information at K = 5, 10, 20, with 95% intervals);
- **in family**: the imitate probe on the trait personas (the default targets; every point trains on
  them) and on each family the point trained on.

Every probe runs on scenes of ``lab`` (the population all points share) from the same scene seeds,
so every point meets the same layouts and personas (agent 0, the seat the model drives, moves as
each model chooses, so later frames can differ). Each point lives in ``OUT/n<N>-seed<S>/`` (data,
run, checkpoint, probes) with its figures in ``point.json``; a point whose ``point.json`` exists is not run again,
so a stopped experiment resumes where it stopped. ``OUT/diversity.json`` gathers the points and
``OUT/diversity.png`` draws the curve.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirrorhall.agents.personas import FAMILIES
from mirrorhall.agents.populations import lab_with
from mirrorhall.errors import ConfigError

KS = (5, 10, 20)
PROBE_POPULATION = "lab"


@dataclass(frozen=True)
class Scale:
    """The sample budget of every point, and the probes' size."""

    episodes: int
    """Episodes of each point's dataset."""
    train: dict
    """``TrainConfig`` fields (``data``, ``out`` and ``seed`` are the point's)."""
    probe_scale: str
    probe_episodes: int | None = None


SCALES = {
    "tiny": Scale(episodes=32, train=dict(size="tiny", steps=12, episodes_per_batch=8, samples_per_episode=32,
                                          lr=2e-3, warmup=2, eval_every=12, checkpoint_every=12,
                                          tokenizer="ngram", positions="relative"),
                  probe_scale="small", probe_episodes=7),
    "cpu": Scale(episodes=4096, train=dict(size="small", steps=1600, episodes_per_batch=32,
                                           samples_per_episode=128, lr=5e-3, warmup=100, precision="auto",
                                           eval_every=400, checkpoint_every=400, tokenizer="ngram",
                                           positions="relative", word_dropout=0.1),
                 probe_scale="full"),
}
SCALES["cpu-recent"] = Scale(episodes=4096, train={**SCALES["cpu"].train, "recency": (2.0, 8.0)}, probe_scale="full")
SCALES["cpu-place"] = Scale(episodes=4096, train={**SCALES["cpu-recent"].train, "place": True}, probe_scale="full")
SCALES["cpu-pickup"] = Scale(episodes=4096, train={**SCALES["cpu-place"].train, "pickups": True}, probe_scale="full")
"""``tiny``: seconds a point (tests, a first look). ``cpu``: the reference recipe's model and
optimiser at a seventh of its samples (1,600 steps of 32 x 128), about 6 minutes a point on 2 cores.
``cpu-recent``: ``cpu`` with a model that also reads recency-weighted evidence (half-lives of 2
and 8 steps, ``ModelConfig.recency``). ``cpu-place``: ``cpu-recent`` whose features also say where
each move leads (``ModelConfig.place``). ``cpu-pickup``: ``cpu-place`` whose features also say
which colour each agent has just collected (``ModelConfig.pickups``). The four differ in the model
only: the same data, seed and budget, so their points are an ablation."""


def training_families(held_out: str) -> tuple[str, ...]:
    """The families added one by one, in ``FAMILIES`` order, ``held_out`` left out."""
    if held_out not in FAMILIES:
        raise ConfigError(f"unknown held-out family {held_out!r}; allowed: {', '.join(FAMILIES)}")
    return tuple(f for f in FAMILIES if f != held_out)


def _figure(result: dict, ks=KS) -> dict:
    """{K: {"mean", "ci95"}} of an imitate result's fraction of attainable information."""
    by_k = {c["K"]: c["fraction"] for c in result["conditions"]}
    return {str(k): {"mean": by_k[k]["mean"], "ci95": by_k[k]["ci95"]} for k in ks if k in by_k}


def run_point(held_out: str, n: int, seed: int, out: Path, scale: str = "cpu", probe_seed: int = 1,
              device: str = "cpu", threads: int = 0, processes: int = 1,
              log: Callable[[str], None] = print, keep_data: bool = False, progress: bool = False) -> dict:
    """Train point ``n`` (the first ``n`` training families) from ``seed`` and probe it; returns
    (and writes) ``out/point.json``. The dataset is deleted afterwards unless ``keep_data``."""
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import run_probe
    from mirrorhall.imitation.checkpoint import export_checkpoint
    from mirrorhall.imitation.generate import GenerateConfig, generate
    from mirrorhall.imitation.train import TrainConfig, train

    size = SCALES[scale]
    fams = training_families(held_out)[:n]
    population = lab_with(fams)
    out = Path(out)
    if out.exists():  # a point stopped half-way starts again from nothing
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seconds = {}
    t0 = time.perf_counter()
    generate(GenerateConfig(population=population, episodes=size.episodes, seed=seed), out / "data",
             processes=processes)
    seconds["generate"] = time.perf_counter() - t0
    cfg = TrainConfig(data=str(out / "data"), out=str(out / "run"), device=device, threads=threads,
                      data_processes=processes, seed=seed, **size.train)
    t0 = time.perf_counter()
    metrics = train(cfg, progress=progress)
    seconds["train"] = time.perf_counter() - t0
    checkpoint = export_checkpoint(out / "run", out / "checkpoint")
    if not keep_data:
        shutil.rmtree(out / "data")
    probe = ModelProbe(checkpoint)
    t0 = time.perf_counter()

    def imitate(targets: str) -> dict:
        return _figure(run_probe("imitate", probe, out / "probes" / targets, PROBE_POPULATION, seed=probe_seed,
                                 episodes=size.probe_episodes, scale=size.probe_scale, targets=targets))

    held = imitate(held_out)
    traits = imitate("traits")
    own = {f: imitate(f) for f in fams}
    seconds["probe"] = time.perf_counter() - t0
    point = {
        "held_out": held_out, "n_families": n, "families": list(fams), "population": population,
        "seed": seed, "probe_seed": probe_seed, "scale": scale, "probe_population": PROBE_POPULATION,
        "samples": size.train["steps"] * size.train["episodes_per_batch"] * size.train["samples_per_episode"],
        "held_out_fraction": held, "traits_fraction": traits, "families_fraction": own,
        "families_mean_K10": float(np.mean([v["10"]["mean"] for v in own.values()])) if own else None,
        "eval": {k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    (out / "point.json").write_text(json.dumps(point, indent=1) + "\n")
    log(f"n = {n} ({population}), seed {seed}: held-out {held_out} K=10 {held['10']['mean']:.3f}, K=20 "
        f"{held['20']['mean']:.3f}; traits K=10 {traits['10']['mean']:.3f}; "
        f"train {seconds['train']:.0f} s")
    return point


def run_experiment(held_out: str, out: str | Path, scale: str = "cpu", seeds=(1,), points=None,
                   probe_seed: int = 1, device: str = "cpu", threads: int = 0, processes: int | None = None,
                   log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Every point (``points``: which n; None: 0 .. all) at every seed, skipping points already done;
    writes ``out/diversity.json`` and ``out/diversity.png``."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    m = len(training_families(held_out))
    points = tuple(range(m + 1)) if points is None else tuple(points)
    for n in points:
        if not 0 <= n <= m:
            raise ConfigError(f"point {n} is out of range: with {held_out} held out there are 0 .. {m} families")
    out = Path(out)
    for done in sorted(out.glob("n*-seed*/point.json")):
        point = json.loads(done.read_text())
        if (point.get("held_out"), point.get("scale")) != (held_out, scale):
            raise ConfigError(f"{out} holds points with {point.get('held_out')} held out at scale "
                              f"{point.get('scale')}, not {held_out} at {scale}; give each its own folder")
    out.mkdir(parents=True, exist_ok=True)
    processes = processes or max(1, min(os.cpu_count() or 1, 16))
    for seed in seeds:
        for n in points:
            folder = out / f"n{n}-seed{seed}"
            if (folder / "point.json").exists():
                continue
            run_point(held_out, n, seed, folder, scale=scale, probe_seed=probe_seed, device=device,
                      threads=threads, processes=processes, log=log, progress=progress)
    return gather(out)


def gather(out: str | Path) -> dict:
    """``out/diversity.json`` and its plot from every finished point in ``out``."""
    out = Path(out)
    found = [json.loads(p.read_text()) for p in sorted(out.glob("n*-seed*/point.json"))]
    if not found:
        raise ConfigError(f"{out} holds no finished point (n<N>-seed<S>/point.json); run the experiment first")
    held = {p["held_out"] for p in found}
    if len(held) > 1:
        raise ConfigError(f"{out} mixes points of several held-out families ({', '.join(sorted(held))}); "
                          "give each held-out family its own folder")
    found.sort(key=lambda p: (p["n_families"], p["seed"]))
    result = {"held_out": found[0]["held_out"], "ks": list(KS), "points": found,
              "curve": curve(found), "scale": sorted({p["scale"] for p in found})}
    (out / "diversity.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "diversity.png")
    return result


def curve(points: list[dict]) -> list[dict]:
    """Per number of training families: the held-out fraction at each K (mean over seeds; with one
    seed, the probe's own 95% interval) and the in-family figures at K = 10."""
    rows = []
    for n in sorted({p["n_families"] for p in points}):
        at = [p for p in points if p["n_families"] == n]
        row = {"n_families": n, "families": at[0]["families"], "seeds": [p["seed"] for p in at]}
        for k in KS:
            key = str(k)
            means = [p["held_out_fraction"][key]["mean"] for p in at]
            lows = [p["held_out_fraction"][key]["ci95"][0] for p in at]
            highs = [p["held_out_fraction"][key]["ci95"][1] for p in at]
            row[f"held_out_K{k}"] = {"mean": float(np.mean(means)), "ci95": [float(np.mean(lows)), float(np.mean(highs))]}
        row["traits_K10"] = float(np.mean([p["traits_fraction"]["10"]["mean"] for p in at]))
        fam = [p["families_mean_K10"] for p in at if p["families_mean_K10"] is not None]
        row["families_mean_K10"] = float(np.mean(fam)) if fam else None
        rows.append(row)
    return rows


def figure(result: dict):
    """The held-out family's fraction against the number of training families (one line per K,
    95% intervals as bars), with the in-family figures at K = 10 beside it."""
    from mirrorhall.analysis.reporting import axes, errorbars

    rows = result["curve"]
    x = [r["n_families"] for r in rows]
    fig, (left, right) = axes(ncols=2)
    for k in KS:
        errorbars(left, x, rows, f"held_out_K{k}", label=f"K = {k}")
    left.axhline(0, color="grey", lw=0.8)
    left.axhline(0.8, color="crimson", ls="--", lw=0.8, label="target at K = 20: 0.8")
    left.set(xlabel="persona families in training (besides lab)", ylabel="fraction of attainable information",
             title=f"held-out family: {result['held_out']}", xticks=x)
    left.legend(fontsize=8)
    right.plot(x, [r["traits_K10"] for r in rows], marker="o", label="trait personas")
    fam = [(r["n_families"], r["families_mean_K10"]) for r in rows if r["families_mean_K10"] is not None]
    if fam:
        right.plot(*zip(*fam, strict=True), marker="s", label="training families (mean)")
    right.set(xlabel="persona families in training (besides lab)", ylabel="fraction at K = 10",
              title="in family", xticks=x)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(result: dict, path: Path) -> None:
    """``figure(result)`` saved to ``path``."""
    figure(result).savefig(path, dpi=100)
