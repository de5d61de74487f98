"""Time to quality on this machine: the training loop's throughput, where its time goes, how far it
runs from the matmul roofline, and the wall-clock from nothing to the imitate target.

    .venv/bin/python benchmarks/speedrun.py loop [--threads 2] [--steps 20]
    .venv/bin/python benchmarks/speedrun.py prompts [--threads 2] [--steps 16]
    .venv/bin/python benchmarks/speedrun.py baseline --checkout DIR [--threads 2] [--recipe-prompts]
    .venv/bin/python benchmarks/speedrun.py target --out DIR [--recipe reference] [--threads 2]

``loop`` trains the `small` model on one generated `lab` dataset with each form of the training
step in turn, in one process, on the same batches, and prints per form: samples/s, the share of
a step spent in data preparation, forward, backward and optimiser, the FLOPs per sample (counted
by torch), the achieved FLOP/s and its fraction of this machine's measured matmul FLOP/s (the
roofline: the best of five timings of (8192 x n) @ (n x n) at the model's widths and the same
threads; for the bf16 form, the faster of fp32 and bf16, since autocast keeps some work in fp32
and a CPU without bf16 units runs bf16 matmuls slower than fp32).

``prompts`` adds the reference recipe's prompt options one at a time (the n-gram tokenizer,
relative positions, word dropout, made-up words; then the made-up words drawn from 8 pool
entries a kind per batch, ``--unreadable-draws 8``) to the `small` model's step, one trainer per
setting in one process, their steps interleaved so that the machine's load falls on all alike,
and prints per setting: samples/s, its ratio to the word tokenizer's, the distinct prompts per
batch, the share of a step the prompt encoder takes (its forward and backward on the batch's
distinct prompts, timed apart), and the FLOPs per sample (counted by torch on one step) against
the roofline as ``loop`` measures it (the faster of fp32 and bf16 where the step runs in bf16).

``baseline`` runs the same `mirrorhall train` command (reference batch: 64 episodes x 128 samples)
from this checkout and from DIR (a checkout of an earlier commit, with its own .venv), alternating,
and prints both steady-state samples/s. ``--recipe-prompts``: both read prompts as the reference
recipe does (its grammar data, ``RECIPE_PROMPT_FLAGS``), for changes to the prompt path.

``target`` runs a recipe from nothing (``mirrorhall.recipes``: generate, train, export, probe) with
held-out evaluations during training, then runs the imitate probe (full scale, seed 1) on every
saved checkpoint. It prints the wall-clock at which each checkpoint was written, its held-out
signal (KL to the exact label on OTHER prompts) and its imitate fraction at K = 10, their
correlation, and the time to the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"


def dataset(folder: Path, episodes: int, seed: int = 1, **fields) -> Path:
    from mirrorhall.imitation.generate import GenerateConfig, generate

    generate(GenerateConfig(population="lab", episodes=episodes, seed=seed, **fields), folder,
             processes=os.cpu_count() or 1)
    return folder


# --- loop: the forms of the training step --------------------------------------------------------


def _forms():
    """name -> logits(model, batch): the training step's forward as it was built up, change by change."""
    from mirrorhall.imitation.model_io import batch_inputs, batch_logits, batch_prompts

    def general(model, batch):  # every (observer, agent) pair, characters per sample: the loop before
        return model(**batch_inputs(model, batch))

    def own_rows(model, batch):  # evidence over (E, T + 1, N) only; characters still per sample
        own = batch.own
        e, tp1, n = own.shape[:3]
        ev = model.evidence(own[:, :-1], batch.actions)
        sums = torch.cat([ev.new_zeros((e, 1, n, ev.shape[-1])), ev.cumsum(1)], dim=1)
        counts = batch.t.to(own.dtype)[:, None].expand(-1, n)
        chars = model.characters(sums[batch.episode, batch.t], counts)
        mask = torch.ones(chars.shape[:2], dtype=torch.bool)
        return model.decide(batch_prompts(model, batch), chars, batch.agent, mask,
                            own[batch.episode, batch.t, batch.agent])

    return {
        "general path: (Ni, Nj) evidence, per-sample characters": (general, False),
        "own rows: evidence pooled over (E, T + 1, N)": (own_rows, False),
        "+ characters, keys, values once per (episode, time)": (batch_logits, False),
        "+ bf16 autocast": (batch_logits, True),
    }


def matmul_flops(threads: int, n: int, dtype, rows: int = 8192, repeats: int = 20, trials: int = 5) -> float:
    """This machine's peak matmul rate (FLOP/s) at width ``n``: the best of ``trials`` timings, so
    that a moment of load on a shared machine does not lower the roofline."""
    torch.set_num_threads(threads)
    a, b = torch.randn(rows, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * rows * n * n * repeats / best


def roofline(threads: int, dtypes) -> float:
    """The best matmul rate (FLOP/s) over ``dtypes`` at the model's widths (64 and 128)."""
    return max(matmul_flops(threads, n, dtype) for n in (64, 128) for dtype in dtypes)


def loop(args) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from mirrorhall.imitation.batches import episode_arrays
    from mirrorhall.imitation.shards import Dataset
    from mirrorhall.imitation.tokenizer import Tokenizer
    from mirrorhall.imitation.train import TrainConfig, Trainer, soft_cross_entropy

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mh-speedrun-"))
    try:
        data = Dataset(dataset(tmp / "data", args.episodes))
        eps = [episode_arrays(ep, data.world, pairs=True) for ep in data.episodes()]
        cfg = TrainConfig(data=str(tmp / "data"), out=str(tmp / "run"), size="small",
                          episodes_per_batch=args.episodes_per_batch, samples_per_episode=128, lr=2e-3,
                          eval_fraction=0.0)
        roof = {False: roofline(args.threads, (torch.float32,)), True: roofline(args.threads, (torch.bfloat16,))}
        print(json.dumps({"machine": lscpu(), "threads": args.threads, "torch": torch.__version__,
                          "matmul_gflops_fp32": round(roof[False] / 1e9, 1),
                          "matmul_gflops_bf16": round(roof[True] / 1e9, 1)}))
        rows = []
        for name, (forward, bf16) in _forms().items():
            trainer = Trainer(cfg, eps, Tokenizer.default(), data.world.n_colors, full_view=True)
            model, opt = trainer.core, trainer.optimizer
            parts = dict.fromkeys(("data", "forward", "backward", "optimiser"), 0.0)
            samples = 0
            flops = None
            for step in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                batch = trainer.batch(step)
                t1 = time.perf_counter()
                counter = FlopCounterMode(display=False) if flops is None else None
                with counter or torch.autocast("cpu", enabled=False):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        logits = forward(model, batch)
                    loss = soft_cross_entropy(logits.float(), batch.label).mean()
                    t2 = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                t3 = time.perf_counter()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                t4 = time.perf_counter()
                if counter is not None:
                    flops = counter.get_total_flops() / len(batch.label)
                    continue  # the counted step is slower; not timed
                if step >= args.warmup:
                    for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                        parts[key] += dt
                    samples += len(batch.label)
            total = sum(parts.values())
            rate = samples / total
            row = {"form": name, "samples_per_s": round(rate), "flops_per_sample": round(flops),
                   "achieved_gflops": round(flops * rate / 1e9, 1),
                   "roofline_fraction": round(flops * rate / (max(roof.values()) if bf16 else roof[False]), 3),
                   **{f"share_{k}": round(v / total, 3) for k, v in parts.items()}}
            rows.append(row)
            print(json.dumps(row))
        base = rows[0]["samples_per_s"]
        for row in rows:
            print(f"{row['samples_per_s'] / base:5.2f}x  {row['form']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- prompts: what the recipe's prompt options cost ---------------------------------------------

PROMPT_OPTIONS = {
    "word tokenizer": dict(tokenizer="word"),
    "+ n-gram tokenizer": dict(tokenizer="ngram"),
    "+ relative positions": dict(tokenizer="ngram", positions="relative"),
    "+ word dropout 0.1": dict(tokenizer="ngram", positions="relative", word_dropout=0.1),
    "+ made-up words 0.05 (the recipe)": dict(tokenizer="ngram", positions="relative", word_dropout=0.1,
                                              unreadable=0.05),
    "the recipe, 8 made-up prompts a kind per batch": dict(tokenizer="ngram", positions="relative",
                                                            word_dropout=0.1, unreadable=0.05, unreadable_draws=8),
}


def prompts(args) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from mirrorhall.imitation.model_io import batch_prompts
    from mirrorhall.imitation.shards import Dataset
    from mirrorhall.imitation.tokenizer import make_tokenizer
    from mirrorhall.imitation.train import TrainConfig, Trainer, load_episodes
    from mirrorhall.recipes import get_recipe

    torch.set_num_threads(args.threads)
    recipe = get_recipe("reference")
    tmp = Path(tempfile.mkdtemp(prefix="mh-speedrun-"))
    try:
        data = Dataset(dataset(tmp / "data", args.episodes, describe_follow=recipe.generate["describe_follow"]))
        eps = load_episodes(data)
        varied = set().union(*PROMPT_OPTIONS.values())
        base = {k: v for k, v in recipe.train.items() if k not in varied}
        base.update(episodes_per_batch=args.episodes_per_batch, eval_fraction=0.0)
        trainers = {}
        for name, options in PROMPT_OPTIONS.items():
            cfg = TrainConfig(data=str(tmp / "data"), out=str(tmp / "run"), **base, **options)
            trainers[name] = Trainer(cfg, eps, make_tokenizer(cfg.tokenizer), data.world.n_colors, full_view=True)
        bf16 = next(iter(trainers.values())).bf16
        roof = roofline(args.threads, (torch.float32, torch.bfloat16) if bf16 else (torch.float32,))
        print(json.dumps({"machine": lscpu(), "threads": args.threads, "torch": torch.__version__,
                          "precision": "bf16" if bf16 else "fp32", "matmul_gflops": round(roof / 1e9, 1)}))
        flops = {}
        for name, trainer in trainers.items():  # one counted step each (slower; not timed)
            with FlopCounterMode(display=False) as counter:
                metrics = trainer.train_step()
            flops[name] = counter.get_total_flops() / metrics["samples"]
        seconds = dict.fromkeys(trainers, 0.0)
        encoder = dict.fromkeys(trainers, 0.0)
        distinct = {name: [] for name in trainers}
        samples = 0
        for step in range(args.warmup + args.steps):
            order = list(trainers.items())
            for name, trainer in order if step % 2 else order[::-1]:  # alternate who goes first
                t0 = time.perf_counter()
                metrics = trainer.train_step()
                t1 = time.perf_counter()
                batch = trainer.batch(trainer.step - 1)  # the batch just trained on (batches are deterministic)
                t2 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.bf16):
                    vectors = batch_prompts(trainer.core, batch)
                vectors.float().sum().backward()
                t3 = time.perf_counter()
                trainer.optimizer.zero_grad(set_to_none=True)
                if step >= args.warmup:
                    seconds[name] += t1 - t0
                    encoder[name] += t3 - t2
                    distinct[name].append(int(torch.unique(batch.prompt).numel()))
            if step >= args.warmup:
                samples += metrics["samples"]
        first = samples / seconds["word tokenizer"]
        for name in trainers:
            rate = samples / seconds[name]
            print(json.dumps({"setting": name, "samples_per_s": round(rate), "ratio": round(rate / first, 3),
                              "distinct_prompts": round(float(np.mean(distinct[name]))),
                              "encoder_share": round(encoder[name] / seconds[name], 3),
                              "flops_per_sample": round(flops[name]), "achieved_gflops": round(flops[name] * rate / 1e9, 1),
                              "roofline_fraction": round(flops[name] * rate / roof, 3)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- baseline: the same command in an earlier checkout ------------------------------------------


def _train_rate(checkout: Path, data: Path, out: Path, threads: int, steps: int, episodes_per_batch: int,
                extra: tuple[str, ...] = ()) -> float:
    cmd = [str(checkout / ".venv/bin/mirrorhall"), "train", "--data", str(data), "--out", str(out),
           "--size", "small", "--steps", str(steps), "--episodes-per-batch", str(episodes_per_batch),
           "--samples-per-episode", "128", "--lr", "2e-3", "--eval-every", "100000", "--checkpoint-every", "100000",
           "--log-every", "10", "--threads", str(threads), "--no-progress", *extra]
    subprocess.run(cmd, check=True, capture_output=True, cwd=checkout)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if r.get("phase") == "train"]
    # steady state: the rate between the first and the last log (start-up and loading excluded)
    first, last = train[0], train[-1]
    per_step = episodes_per_batch * 128
    t_first = first["step"] * per_step / first["samples_per_s"]
    t_last = last["step"] * per_step / last["samples_per_s"]
    return (last["step"] - first["step"]) * per_step / (t_last - t_first)


RECIPE_PROMPT_FLAGS = (*(item for field, value in PROMPT_OPTIONS["the recipe, 8 made-up prompts a kind per batch"].items()
                         for item in (f"--{field.replace('_', '-')}", str(value))), "--precision", "auto")
"""``baseline --recipe-prompts``: how the reference recipe reads prompts (``PROMPT_OPTIONS``' last
setting: 8 made-up prompts offered a kind per batch)."""


def baseline(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mh-speedrun-"))
    try:
        from mirrorhall.recipes import get_recipe

        # --recipe-prompts: the reference recipe's data and prompt options, both checkouts alike
        follow = {"describe_follow": get_recipe("reference").generate["describe_follow"]} if args.recipe_prompts else {}
        data = dataset(tmp / "data", args.episodes, **follow)
        settings = ((("before", Path(args.checkout), RECIPE_PROMPT_FLAGS), ("now", ROOT, RECIPE_PROMPT_FLAGS))
                    if args.recipe_prompts else
                    (("before", Path(args.checkout), ()), ("now", ROOT, ()),
                     ("now, --precision bf16", ROOT, ("--precision", "bf16"))))
        print(json.dumps({"machine": lscpu(), "threads": args.threads}))
        rates: dict[str, list[float]] = {label: [] for label, _, _ in settings}
        for rep in range(args.repeats):
            for label, checkout, extra in settings:
                out = tmp / f"run-{rep}-{len(rates[label])}-{label[:3]}"
                rates[label].append(_train_rate(checkout, data, out, args.threads, args.steps,
                                                args.episodes_per_batch, extra))
                shutil.rmtree(out, ignore_errors=True)
                print(json.dumps({"checkout": label, "repeat": rep, "samples_per_s": round(rates[label][-1])}))
        best = {k: max(v) for k, v in rates.items()}
        print(json.dumps({"episodes_per_batch": args.episodes_per_batch,
                          **{k: round(v) for k, v in best.items()},
                          **{f"ratio {k}": round(v / best["before"], 2) for k, v in best.items() if k != "before"}}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- target: time to quality --------------------------------------------------------------------


def target(args) -> None:
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import run_probe
    from mirrorhall.recipes import fraction_at, get_recipe, run_recipe

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    print(json.dumps({"machine": lscpu(), "threads": args.threads, "recipe": args.recipe}))
    t0 = time.time()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    result = run_recipe(args.recipe, out, threads=args.threads, log=lambda s: print(s, flush=True),
                        train_overrides=overrides, minutes=args.minutes)
    recipe = get_recipe(args.recipe)
    start = t0 + result["seconds"]["generate"]  # training starts when generation ends
    evals = {r["step"]: r for r in map(json.loads, (out / "run/metrics.jsonl").read_text().splitlines())
             if r.get("phase") == "eval"}
    points = []
    for folder in sorted((out / "run/checkpoints").glob("step-*")):
        step = int(folder.name.split("-")[1])
        written = folder.stat().st_mtime - t0
        probe = run_probe("imitate", ModelProbe(folder), out / "probes" / folder.name, "lab", seed=recipe.probe_seed,
                          scale="full")
        fraction = fraction_at(probe, 10)
        points.append({"step": step, "seconds_since_start": round(written, 1),
                       "eval_kl_OTHER": round(evals.get(step, {}).get("eval_kl_OTHER", float("nan")), 4),
                       "fraction_at_K10": round(fraction, 4)})
        print(json.dumps(points[-1]), flush=True)
    kl = np.array([p["eval_kl_OTHER"] for p in points])
    frac = np.array([p["fraction_at_K10"] for p in points])
    ok = np.isfinite(kl)
    corr = float(np.corrcoef(kl[ok], frac[ok])[0, 1]) if ok.sum() > 2 else None
    reached = [p for p in points if p["fraction_at_K10"] >= (recipe.target or 0.89)]
    summary = {"recipe": args.recipe, "train_start_s": round(start - t0, 1), "points": points,
               "correlation_kl_vs_fraction": corr, "stage_seconds": result["seconds"],
               "final_fraction_at_K10": result["fraction_at_K10"],
               "time_to_target_s": reached[0]["seconds_since_start"] if reached else None}
    (out / "speedrun.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "points"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for what, steps in (("loop", 20), ("prompts", 16)):  # both time training steps in one process
        a = sub.add_parser(what)
        a.add_argument("--threads", type=int, default=2)
        a.add_argument("--steps", type=int, default=steps)
        a.add_argument("--warmup", type=int, default=3)
        a.add_argument("--episodes", type=int, default=512)
        a.add_argument("--episodes-per-batch", type=int, default=64)
    b = sub.add_parser("baseline")
    b.add_argument("--checkout", required=True)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--steps", type=int, default=60)
    b.add_argument("--repeats", type=int, default=2)
    b.add_argument("--episodes-per-batch", type=int, default=64)
    b.add_argument("--episodes", type=int, default=512)
    b.add_argument("--recipe-prompts", action="store_true",
                   help="both checkouts read prompts as the reference recipe does (its data, n-gram tokenizer, "
                        "relative positions, word dropout, made-up prompts drawn 8 a batch, auto precision)")
    c = sub.add_parser("target")
    c.add_argument("--out", required=True)
    c.add_argument("--recipe", default="reference")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a training field of the recipe, e.g. --set lr=2e-3 (a variant, recorded in recipe.json)")
    c.add_argument("--minutes", type=float, default=None,
                   help="the recipe's wall-clock budget (default: the recipe's own; 0: none, exactly its steps)")
    args = ap.parse_args()
    {"loop": loop, "prompts": prompts, "baseline": baseline, "target": target}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
