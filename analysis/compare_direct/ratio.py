"""The sample-efficiency ratio: the env steps a PPO learner needs to reach the model's quality
after K watched steps, read off its learning curve.

Quality is the excess cross-entropy over pi_test's entropy, KL(pi_test || q), each arm's in its own
held-out situations (the model's at step K of its scenes, PPO's at every step of the same scenes):
the entropy floors of the two sets differ, their KLs share the floor 0.

``steps_to_reach`` interpolates one curve linearly in log(env steps) between the last evaluation
above the target and the first at or below it (linearly in steps from the untrained point at 0);
a curve that never reaches the target is censored at its last evaluation (a lower bound).
``aggregate`` summarises runs (personas x seeds) by the geometric mean of their steps with a 95%
bootstrap interval over runs; with any run censored, the figure is a lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mirrorhall import streams


def steps_to_reach(steps: Sequence[float], values: Sequence[float], target: float) -> tuple[float, bool]:
    """(env steps, reached) at which the curve ``values`` over ``steps`` first falls to ``target``.

    ``steps`` increase from 0 (the untrained policy). Not reached: (the last step, False)."""
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.size == 0 or x.size != y.size or np.any(np.diff(x) <= 0):
        raise ValueError("steps must be increasing and match values")
    hit = np.flatnonzero(y <= target)
    if hit.size == 0:
        return float(x[-1]), False
    i = int(hit[0])
    if i == 0:
        return float(x[0]), True
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    frac = (y0 - target) / (y0 - y1)  # in (0, 1]: y0 > target >= y1
    if x0 <= 0:
        return float(x0 + frac * (x1 - x0)), True
    return float(math.exp(math.log(x0) + frac * (math.log(x1) - math.log(x0)))), True


def aggregate(steps: Sequence[float], reached: Sequence[bool], n_boot: int = 1000, seed: int = 0) -> dict:
    """Geometric mean of the runs' steps, 95% bootstrap interval over runs, and how many reached.

    Censored runs count with their budget, so with ``lower_bound`` the mean and the interval are
    lower bounds of what the runs would need."""
    s = np.maximum(np.asarray(steps, dtype=np.float64), 1.0)  # a run at its target untrained counts as 1 step
    ok = np.asarray(reached, dtype=bool)
    if s.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0, "reached": 0, "lower_bound": False}
    logs = np.log(s)
    rng = streams.rng(streams.BOOTSTRAP, seed)
    boots = logs[rng.integers(s.size, size=(n_boot, s.size))].mean(1)
    lo, hi = np.exp(np.percentile(boots, [2.5, 97.5]))
    return {"mean": float(np.exp(logs.mean())), "ci95": [float(lo), float(hi)], "n": int(s.size),
            "reached": int(ok.sum()), "lower_bound": bool(not ok.all())}


def carried(curve_steps: Sequence[float], curve_values: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """The curve's values at the ``grid`` steps it was evaluated at; after its last evaluation (a
    run that stopped once it converged) its last value is carried forward."""
    x = np.asarray(curve_steps, dtype=np.float64)
    y = np.asarray(curve_values, dtype=np.float64)
    idx = np.searchsorted(x, np.asarray(grid, dtype=np.float64), side="right") - 1
    return y[np.clip(idx, 0, None)]
