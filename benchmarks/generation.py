"""Labelled samples per second: one process vs Ray tasks, on the default population.

    .venv/bin/python benchmarks/generation.py [--episodes 512] [--workers 2]

Target (docs/benchmarks.md): at least 50k labelled samples/s per core for the default population,
and at least 10x the training throughput of the default model. Writes one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from mirrorhall.imitation.generate import GenerateConfig, generate, generate_shard_bytes


def timed_generate(cfg: GenerateConfig, workers: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    try:
        t0 = time.perf_counter()
        manifest = generate(cfg, out / "ds", workers=workers)
        dt = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"workers": workers, "samples": manifest["samples"], "seconds": round(dt, 3),
            "samples_per_s": round(manifest["samples"] / dt)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cfg = GenerateConfig(episodes=args.episodes)
    generate_shard_bytes(cfg.to_json(), 0)  # warm imports and caches
    rows = [dict(setting=f"labelling only, {min(4, cfg.n_shards)} shards, 1 core", **_label_only(cfg))]
    rows.append(dict(setting="generate, 1 process", **timed_generate(cfg, 0)))
    if args.workers:
        from mirrorhall.raykit import ray_session

        with ray_session(num_cpus=args.workers):
            timed_generate(GenerateConfig(episodes=args.workers * cfg.episodes_per_shard), args.workers)
            rows.append(dict(setting=f"generate, Ray {args.workers} workers (warm)",
                             **timed_generate(cfg, args.workers)))
    for row in rows:
        print(json.dumps(row))


def _label_only(cfg: GenerateConfig) -> dict:
    t0 = time.perf_counter()
    n = 0
    for shard in range(min(4, cfg.n_shards)):
        n += generate_shard_bytes(cfg.to_json(), shard)[2]
    dt = time.perf_counter() - t0
    return {"samples": n, "seconds": round(dt, 3), "samples_per_s": round(n / dt)}


if __name__ == "__main__":
    main()
