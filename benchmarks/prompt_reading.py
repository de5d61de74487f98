"""Prompt reading: the imitate probe's fraction at K = 10 under other wordings of OTHER(k).

    .venv/bin/python benchmarks/prompt_reading.py --checkpoint RUN [RUN ...] [--split train|held_out|all]
        [--episodes 42] [--seed 1] [--threads 1]

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

import numpy as np
import torch

from mirrorhall.analysis import imitate
from mirrorhall.analysis.common import ModelProbe
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", nargs="+", required=True)
    ap.add_argument("--split", choices=("train", "held_out", "all"), default="train")
    ap.add_argument("--episodes", type=int, default=42, help="probe scenes (42: the probe's small scale)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--population", default="lab")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for ckpt in args.checkpoint:
        for template in wordings(args.split):
            result = imitate.run(Reworded(ckpt, template), args.population, episodes=args.episodes, seed=args.seed,
                                 ks=(0, 10), closed_loop=False)
            frac = next(c["fraction"] for c in result["conditions"] if c["K"] == 10)
            print(json.dumps({"checkpoint": ckpt, "prompt": template, "fraction_K10": round(frac["mean"], 3),
                              "ci95": [round(x, 3) for x in frac["ci95"]]}), flush=True)


if __name__ == "__main__":
    main()
