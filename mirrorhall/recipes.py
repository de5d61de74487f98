"""Recipes: the whole path from nothing to a probed checkpoint, as one named, timed run.

A recipe is a dataset (``GenerateConfig``), a training run (``TrainConfig`` fields), and the probe
that judges it (``imitate`` at a stated scale and seed). ``run_recipe`` runs its four stages in a
fresh folder and times each one::

    OUT/data/         the generated dataset
    OUT/run/          the training run (checkpoints, metrics.jsonl)
    OUT/checkpoint/   the exported final checkpoint (weights and metadata, no optimizer state)
    OUT/probe/        imitate.json and imitate.png
    OUT/recipe.json   the recipe, the machine, each stage's seconds and the headline figure

``reference`` is the shipped ``checkpoints/reference``'s recipe (6,000 steps: 39-55 minutes on the
2-core CPUs measured, ``docs/benchmarks.md``); ``fast`` is the same fitted to a 20-minute budget
(``Recipe.minutes``: as many steps as the machine runs in time); ``tiny`` runs every stage at a
scale that finishes in seconds (the tests run it). A recipe without a budget gives the same
checkpoint for the same seed and thread count on CPU; with one, how many steps it trains depends
on the machine's speed, and its run is the one the config saved in its checkpoints gives
(``TrainConfig.from_json`` of ``checkpoint.json``'s ``run_config``, with the planned ``steps`` and
``totals``): training that config again gives the same weights.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mirrorhall.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """What a recipe generates, trains and probes."""

    description: str
    generate: dict
    """``GenerateConfig`` fields."""
    train: dict
    """``TrainConfig`` fields (``data`` and ``out`` are the recipe folder's)."""
    probe_scale: str = "full"
    probe_episodes: int | None = None
    """Scenes of the imitate probe (None: by ``probe_scale``)."""
    probe_seed: int = 1
    target: float | None = None
    """Fraction of attainable information at K = 10 the recipe is meant to reach."""
    minutes: float | None = None
    """A wall-clock budget from nothing to the probe's result: the training stage then runs as many
    steps as fit (``imitation.train.Budget``), at most ``train["steps"]``; None: exactly those steps."""


REFERENCE = Recipe(
    description="the reference checkpoint's recipe on a CPU: `lab` with the prompt grammar (a fifth of "
                "its descriptions name a follower of an agent), the `small` model reading prompts through "
                "an n-gram tokenizer with relative positions, word dropout and SELF, OTHER and SECOND "
                "forms partly in made-up words, 6,000 steps in bf16 where the CPU has bf16 units, else fp32 "
                "(55 minutes on a 2-core Xeon beside other work; 18 minutes on 2 Zen 5 cores before the "
                "made-up words and followers; docs/benchmarks.md)",
    generate=dict(population="lab", episodes=12288, seed=1, describe_follow=0.2),
    train=dict(size="small", steps=6000, episodes_per_batch=64, samples_per_episode=128, lr=5e-3,
               warmup=100, precision="auto", eval_every=250, checkpoint_every=500, seed=0,
               tokenizer="ngram", positions="relative", word_dropout=0.1, unreadable=0.05),
    probe_scale="full", probe_seed=1, target=0.89)

RECIPES = {
    "reference": REFERENCE,
    "fast": replace(
        REFERENCE,
        description="the reference recipe fitted to 20 minutes from nothing: training runs as many of the "
                    "reference's 6,000 steps as fit the budget (planned from the rate measured in the warm-up and "
                    "revised as it goes), the learning rate falling linearly to zero at the end, with made-up "
                    "prompts drawn 8 a kind per batch (--unreadable-draws 8) and an average of the weights "
                    "(--ema 0.998) as the model (about 3,300 steps on a 2-core Zen 4 at 25k samples/s; "
                    "docs/benchmarks.md)",
        train={**REFERENCE.train, "unreadable_draws": 8, "ema": 0.998, "schedule": "linear"}, minutes=20),
    "families": Recipe(
        description="the reference recipe on `lab-families` (lab plus every persona family) with a model that "
                    "reads recency-weighted evidence and where each move leads (--recency 2 8 --place), the "
                    "candidate reference of the persona families (about an hour on 2 cores with bf16 units)",
        generate=dict(population="lab-families", episodes=12288, seed=1),
        train=dict(size="small", steps=6000, episodes_per_batch=64, samples_per_episode=128, lr=5e-3,
                   warmup=100, precision="auto", eval_every=250, checkpoint_every=500, seed=0,
                   tokenizer="ngram", positions="relative", word_dropout=0.1, recency=(2.0, 8.0), place=True),
        probe_scale="full", probe_seed=1, target=0.89),
    "tiny": Recipe(
        description="every stage at a scale that finishes in seconds (for tests and a first look)",
        generate=dict(population="lab", episodes=64, seed=1, episodes_per_shard=16, describe_follow=0.2),
        train=dict(size="tiny", steps=30, episodes_per_batch=8, samples_per_episode=64, lr=2e-3, warmup=5,
                   eval_every=15, checkpoint_every=15, seed=0, tokenizer="ngram", positions="relative",
                   word_dropout=0.1, unreadable=0.05),
        probe_scale="small", probe_episodes=8, probe_seed=1),
}

STAGES = ("generate", "train", "export", "probe")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def machine() -> dict:
    """What the timings were measured on."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in load] if load else None}


AFTER_TRAINING_S = 30.0
"""What a budget keeps back for export and the probe (9-11 s for the full-scale imitate probe on 2
cores) and for a machine that slows down after the run's last look."""


def run_recipe(name: str, out: str | Path, device: str = "cpu", threads: int = 0, processes: int | None = None,
               log: Callable[[str], None] = print, progress: bool = False, train_overrides: dict | None = None,
               minutes: float | None = None) -> dict:
    """Run recipe ``name`` into the new folder ``out``; returns (and writes) ``out/recipe.json``.
    ``train_overrides`` replaces training fields of the recipe (a variant; recorded as such).
    ``minutes`` replaces the recipe's budget (0: none, train exactly its steps); with a budget,
    ``recipe.json``'s ``train`` holds the planned steps and ``budget`` the plan."""
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import run_probe
    from mirrorhall.imitation.checkpoint import export_checkpoint
    from mirrorhall.imitation.generate import GenerateConfig, generate
    from mirrorhall.imitation.train import Budget, TrainConfig, resolve_precision, train

    recipe = get_recipe(name)
    if train_overrides:
        recipe = replace(recipe, train={**recipe.train, **train_overrides})
    if minutes is not None:
        check_minutes(minutes)
        recipe = replace(recipe, minutes=minutes or None)
    out = Path(out)
    processes = processes or max(1, min(os.cpu_count() or 1, 16))
    gen = GenerateConfig(**recipe.generate)
    cfg = TrainConfig(data=str(out / "data"), out=str(out / "run"), device=device, threads=threads,
                      data_processes=processes, **recipe.train)
    result = {"recipe": name, **asdict(recipe), "overrides": train_overrides or {}, "device": device,
              "precision_used": resolve_precision(cfg.precision, device), "machine": machine(),
              "seconds": {}}
    log(f"training precision: {result['precision_used']}" + (" (auto)" if cfg.precision == "auto" else ""))
    t_start = time.perf_counter()

    def stage(title: str, fn):
        t0 = time.perf_counter()
        value = fn()
        result["seconds"][title] = round(time.perf_counter() - t0, 2)
        log(f"{title}: {result['seconds'][title]:.1f} s")
        return value

    budget = Budget(t_start + recipe.minutes * 60 - AFTER_TRAINING_S) if recipe.minutes else None
    stage("generate", lambda: generate(gen, out / "data", processes=processes))
    metrics = stage("train", lambda: train(cfg, progress=progress, budget=budget))
    if budget is not None:
        plan = budget.plan
        result["train"] = {**result["train"], **{k: plan[k] for k in ("steps", "totals", "eval_every", "checkpoint_every")}}
        result["budget"] = plan
        log(f"budget of {recipe.minutes:g} minutes: {plan['steps']} steps (at most {plan['at_most']}; first planned at "
            f"{plan['seconds_per_step']:.3f} s a step, {len(plan['totals'][1:])} later plans)")
    checkpoint = stage("export", lambda: export_checkpoint(out / "run", out / "checkpoint"))
    probe = stage("probe", lambda: run_probe("imitate", ModelProbe(checkpoint), out / "probe", gen.population,
                                             seed=recipe.probe_seed, episodes=recipe.probe_episodes,
                                             scale=recipe.probe_scale))
    result["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    result["train_metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    result["fraction_at_K10"] = fraction_at(probe, 10)
    result["checkpoint"] = str(checkpoint)
    (out / "recipe.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def check_minutes(minutes: float) -> None:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 <= minutes <= 10**4:
        raise ConfigError(f"--minutes must be a number of minutes in 0..10000 (0: no budget), got {minutes!r}")


def fraction_at(probe: dict, k: int) -> float | None:
    """The imitate probe's fraction of attainable information at K = ``k``."""
    for cond in probe.get("conditions", []):
        if cond.get("K") == k:
            return cond["fraction"]["mean"]
    return None
