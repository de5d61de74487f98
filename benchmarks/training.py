"""Training throughput: labelled samples/s in one local process vs Ray Train with 2 workers.

    .venv/bin/python benchmarks/training.py [--size default] [--steps 60]

Both runs use the same dataset (generated here, default population) and model size; the figure
is steady-state samples per second as each loop measures it (Ray: 2 x rank 0's rate).
Compare with benchmarks/generation.py: generation must be >= 10x this.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from mirrorhall.imitation.generate import GenerateConfig, generate
from mirrorhall.imitation.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=256, help="episodes in the generated dataset")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mh-train-bench-"))
    try:
        data = tmp / "data"
        generate(GenerateConfig(episodes=args.episodes), data)
        cfg = dict(data=str(data), steps=args.steps, size=args.size, eval_every=10_000, checkpoint_every=10_000,
                   log_every=args.steps)
        local = train(TrainConfig(out=str(tmp / "local"), **cfg), progress=False)
        print(json.dumps({"setting": "local, 1 process (torch default threads)", "size": args.size,
                          "samples_per_s": round(local["samples_per_s"])}))
        if args.workers:
            from mirrorhall.imitation.train_ray import train_ray

            ray_m = train_ray(TrainConfig(out=str(tmp / "ray"), **cfg), workers=args.workers)
            print(json.dumps({"setting": f"Ray Train, {args.workers} workers x 1 thread", "size": args.size,
                              "samples_per_s": round(ray_m["samples_per_s"])}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
