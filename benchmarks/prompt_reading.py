"""Prompt reading: tokenizers and encoder positions compared, by the held-out loss of the training
split and by the imitate probe's fraction at K = 10 under other wordings of OTHER(k).

    .venv/bin/python benchmarks/prompt_reading.py --train DATA --out DIR [--steps 400] [--threads 1]
        [--variants NAME ...]
    .venv/bin/python benchmarks/prompt_reading.py --checkpoint RUN [RUN ...] [--split train|held_out|all]
        [--episodes 280] [--seed 1] [--threads 1]

``--train`` loads a dataset once and trains each variant of ``VARIANTS`` on it in turn (the same
seed, batches and steps; each is what ``mirrorhall train`` with the variant's flags and ``SHORT``
would train), writing DIR/NAME (a checkpoint) and printing each one's final held-out figures.

For each checkpoint, the imitate probe (``mirrorhall.analysis.imitate``, open loop, on its own
scenes: the same scenes for every wording) is run with the canonical template "behave as agent
{k}" and with each wording of ``WORDINGS``: forms of the training families with optional words
before them (so the words that carry the meaning sit at other token positions), a shape-matched
nonsense control, and, with ``--split held_out`` or ``all``, every form of the held-out OTHER
families. Prints one JSON line per (checkpoint, wording): the fraction of attainable information
at K = 10 and its 95% interval. docs/benchmarks.md ("Prompt reading") holds a run of it.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings

import numpy as np
import torch

from mirrorhall.analysis import imitate
from mirrorhall.analysis.common import ModelProbe
from mirrorhall.errors import InputWarning
from mirrorhall.imitation.prompts import Kind, families, fill

CANONICAL = "behave as agent {k}"
TRAIN_WORDINGS = (
    "please behave as agent {k}",
    "ok, imitate agent {k}",
    "from now on, do what agent {k} would do",
    "for this round, play the role of agent {k}",
    "go on and act like the agent wearing {k} for a while",
)
"""Training families' forms, shifted by optional words before (and once after) them."""
NONSENSE = "blick florp zanu agent {k}"
"""A shape-matched control: three words the model never saw, then the agent, as in the
canonical template's place of "agent" at the 4th token."""
_AGENT = re.compile(r"agent (\d+)$")


class Reworded(ModelProbe):
    """The checkpoint's model, asked with ``template`` wherever the probe asks "behave as agent k"."""

    def __init__(self, checkpoint, template: str):
        super().__init__(checkpoint)
        self.template = template

    def query(self, scene, world, agent, t, prompts, situation=None) -> np.ndarray:
        texts = [fill(self.template, target=int(_AGENT.search(p).group(1))) for p in prompts]
        return super().query(scene, world, agent, t, texts, situation)


def wordings(split: str) -> list[str]:
    train = [CANONICAL, *TRAIN_WORDINGS, NONSENSE]
    held = [form for f in families(Kind.OTHER, held_out=True) for form in f.forms]
    return {"train": train, "held_out": [CANONICAL, *held], "all": train + held}[split]


VARIANTS = {
    "a-word-absolute": dict(tokenizer="word", positions="absolute"),
    "b-ngram-absolute": dict(tokenizer="ngram", positions="absolute"),
    "c-ngram-relative": dict(tokenizer="ngram", positions="relative"),
    "d-ngram-relative-dropout": dict(tokenizer="ngram", positions="relative", word_dropout=0.1),
}
SHORT = dict(size="small", episodes_per_batch=64, samples_per_episode=128, lr=5e-3, warmup=30, precision="bf16",
             seed=0, eval_samples=4096)
"""A short run: the reference recipe's model, batches and learning rate, fewer steps."""


def train_variants(data_dir: str, out: str, steps: int, threads: int, only: list[str] | None = None) -> None:
    import time
    from pathlib import Path

    from mirrorhall.imitation.checkpoint import save_checkpoint
    from mirrorhall.imitation.shards import Dataset
    from mirrorhall.imitation.tokenizer import make_tokenizer
    from mirrorhall.imitation.train import TrainConfig, Trainer, load_episodes

    data = Dataset(data_dir)
    episodes = load_episodes(data)
    for name, variant in VARIANTS.items():
        if only and name not in only:
            continue
        cfg = TrainConfig(data=data_dir, out=str(Path(out) / name), steps=steps, threads=threads, **SHORT, **variant)
        tokenizer = make_tokenizer(cfg.tokenizer)
        start = time.perf_counter()
        trainer = Trainer(cfg, episodes, tokenizer, data.world.n_colors, full_view=data.world.view_radius is None)
        for _ in range(steps):
            trainer.train_step()
        metrics = trainer.evaluate()
        save_checkpoint(Path(cfg.out), trainer.core, tokenizer, run_config=cfg.to_json(), step=steps,
                        metrics=metrics)
        print(json.dumps({"variant": name, **variant, "steps": steps, "seconds": round(time.perf_counter() - start),
                          **{k: round(v, 4) for k, v in metrics.items() if k.startswith("eval_kl")}}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", nargs="+")
    ap.add_argument("--train", metavar="DATA")
    ap.add_argument("--out")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="train only these (one process each: run them side by side)")
    ap.add_argument("--split", choices=("train", "held_out", "all"), default="train")
    ap.add_argument("--episodes", type=int, default=280, help="probe scenes (280: the probe's full scale)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--population", default="lab")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", InputWarning)  # unseen words are the point of several wordings
    if args.train:
        train_variants(args.train, args.out, args.steps, args.threads, args.variants)
        return
    for ckpt in args.checkpoint:
        for template in wordings(args.split):
            result = imitate.run(Reworded(ckpt, template), args.population, episodes=args.episodes, seed=args.seed,
                                 ks=(0, 10), closed_loop=False)
            frac = next(c["fraction"] for c in result["conditions"] if c["K"] == 10)
            print(json.dumps({"checkpoint": ckpt, "prompt": template, "fraction_K10": round(frac["mean"], 3),
                              "ci95": [round(x, 3) for x in frac["ci95"]]}), flush=True)


if __name__ == "__main__":
    main()
