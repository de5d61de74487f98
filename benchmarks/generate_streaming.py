"""Streaming generation: time to the first shard and memory of `mirrorhall generate` at any size.

    .venv/bin/python benchmarks/generate_streaming.py [--episodes 1000000000] [--seconds 60]
                                                      [--processes 1]

Runs `mirrorhall generate --episodes N` as a child process in its own session, waits for the first
shard to appear, samples the resident memory of the command and every process it started (RSS
summed over the tree) until ``--seconds`` have passed, then kills the whole session (``kill -9``)
and checks that nothing of it is left. Targets (docs/reliability.md): the first shard within 10 s
and under 1 GiB of memory after 60 s, at 10**9 episodes; memory does not depend on the count.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIRRORHALL = str(Path(sys.executable).parent / "mirrorhall")
FIRST_SHARD_S = 10.0
RSS_BOUND_MIB = 1024.0


def process_tree(root: int) -> set[int]:
    """``root`` and its live descendants."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if stat[0] != "Z":
                parent[int(entry.name)] = int(stat[1])
    found = {root} if root in parent else set()
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def rss_mib(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def kill_session(proc: subprocess.Popen) -> None:
    """``kill -9`` of the command's whole session (it is its leader), if anything of it is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def stream(episodes: int, seconds: float, processes: int = 1, out: Path | None = None,
           poll_s: float = 0.05) -> dict:
    """Run `generate --episodes episodes` for ``seconds`` (at least until its first shard), kill it
    and report what it did."""
    own = out is None
    out = Path(tempfile.mkdtemp(prefix="mh-stream-")) if own else Path(out)
    data = out / "data"
    cmd = [MIRRORHALL, "generate", "--episodes", str(episodes), "--out", str(data), "--no-progress",
           "--processes", str(processes)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    samples: list[tuple[float, float]] = []
    seen: set[int] = set()
    try:
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if first is None and (data / "shard-00000.parquet").exists():
                first = now
            tree = process_tree(proc.pid)
            seen |= tree
            samples.append((now, rss_mib(tree)))
            if now >= seconds and first is not None:
                break
            if now >= max(seconds, 120.0):  # no shard at all: give up
                break
            time.sleep(poll_s)
        ended = proc.poll()
        shards = len(list(data.glob("shard-*.parquet")))
        kill_session(proc)
        deadline = time.time() + 10
        while time.time() < deadline and any(process_tree(p) for p in seen - {proc.pid}):
            time.sleep(0.1)
        left = sorted(set().union(*(process_tree(p) for p in seen - {proc.pid})) if seen else set())
    finally:
        kill_session(proc)
        if own:
            shutil.rmtree(out, ignore_errors=True)
    late = [r for t, r in samples if t >= seconds - 5] or [r for _, r in samples[-5:]]
    result = {
        "episodes": episodes, "processes": processes, "seconds": round(samples[-1][0], 1) if samples else 0.0,
        "first_shard_s": None if first is None else round(first, 2),
        "shards": shards, "exited_early": ended is not None,
        "rss_mib_end": round(max(late), 1) if late else 0.0,
        "rss_mib_peak": round(max(r for _, r in samples), 1) if samples else 0.0,
        "left_running": left,
    }
    if ended is not None:
        result["stderr"] = proc.stderr.read().decode(errors="replace")[-2000:]
    result["ok"] = (first is not None and first <= FIRST_SHARD_S and result["rss_mib_peak"] < RSS_BOUND_MIB
                    and not left and ended is None)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=10**9)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(stream(args.episodes, args.seconds, args.processes)))


if __name__ == "__main__":
    main()
