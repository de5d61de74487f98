"""What every probe's plot and report section share: number and interval formatting, verdicts
against a target, error bars, the figure's frame, and numpy values in result JSON.

A leaf module: the probes import it and ``report.py`` imports the probes, so the helpers cannot
live in ``report.py`` without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def json_default(x):
    """``json.dumps``'s ``default`` for results: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def fmt(x, digits=3) -> str:
    """A number to ``digits`` places; ``-`` for a missing or non-finite one."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_ci(d: dict) -> str:
    """``mean [lo, hi]`` of a ``{"mean", "ci95"}`` figure; ``-`` when it was not measured."""
    if d.get("mean") is None:
        return "-"
    lo, hi = d["ci95"]
    return f"{d['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def verdict(value, target, higher=True) -> str:
    """``met``/``MISSED`` for ``value`` against ``target`` (a bound from the probe's ``targets``;
    None where the result states none)."""
    if value is None:
        return "not measured"
    if target is None:
        return f"not judged ({fmt(value)}; the result states no target)"
    ok = value >= target if higher else value <= target
    return f"{'met' if ok else 'MISSED'} ({fmt(value)} vs target {'>=' if higher else '<='} {target})"


def mean_of(c: dict, key: str) -> float:
    """The mean of figure ``key`` in condition ``c``; NaN (a gap in the line) when not measured."""
    return c[key]["mean"] if c[key]["mean"] is not None else np.nan


def yerr(c: dict, key: str) -> list[list[float]]:
    """Matplotlib's asymmetric error bar ``[[below], [above]]`` of figure ``key`` in ``c``. A
    bootstrap interval of a ratio (the fraction of attainable information) need not hold the ratio
    of the means when the denominator is small; the bar then stops at the mean on that side."""
    lo, hi = c[key]["ci95"]
    m = c[key]["mean"]
    if m is None or lo is None:
        return [[0], [0]]
    return [[max(m - lo, 0.0)], [max(hi - m, 0.0)]]


TARGET_STYLE = {"color": "crimson", "linestyle": (0, (6, 3)), "linewidth": 1.2}
"""How every plot draws a target line (its label starts with "target")."""


def axes(ncols: int = 1):
    """(figure, axes) of one probe plot; with ``ncols`` > 1, a list of side-by-side axes."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    fig = Figure(figsize=(6.4 * (1 if ncols == 1 else 0.8 * ncols), 4.2))
    return fig, fig.subplots(1, ncols) if ncols > 1 else fig.subplots()


def errorbars(ax, xs, conditions: list[dict], key: str, fmt: str = "o-", **kw):
    """The means of figure ``key`` against ``xs`` with their 95% intervals as error bars (the
    interval the report's tables show); a gap where a figure was not measured."""
    return ax.errorbar(xs, [mean_of(c, key) for c in conditions],
                       yerr=np.hstack([yerr(c, key) for c in conditions]) if conditions else None,
                       fmt=fmt, capsize=3, elinewidth=1, **kw)


def target_line(ax, value, label: str, horizontal: bool = True) -> None:
    """A target from the result's ``targets`` as a dashed line labelled ``target: ...``;
    nothing when the result states none."""
    if value is None:
        return
    draw = ax.axhline if horizontal else ax.axvline
    draw(float(value), label=f"target: {label}", **TARGET_STYLE)


def save(fig, ax, result: dict, path: Path):
    """Title (probe, population, seed), legend where there are labels, and the PNG at ``path``;
    returns the figure. ``ax`` may be a list of axes (the title then spans them)."""
    title = f"{result['probe']} ({result.get('population')}, seed {result.get('seed')})"
    many = isinstance(ax, (list, tuple, np.ndarray))
    for a in (ax if many else [ax]):
        if a.get_legend() is None and a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7 if many else 8)
    if many:
        fig.suptitle(title)
    else:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def wordings_table(r: dict, label: str, figure) -> list[str]:
    """The markdown table of a result's wordings (``prompts``: the canonical template first, then
    the user's ``--prompt``s), ``figure(entry)`` the figure shown; nothing where the user gave none."""
    entries = r.get("prompts") or []
    if len(entries) < 2:
        return []
    rows = [f"Wordings on the same scenes ({label}; the first is the canonical template):", "",
            f"| wording | {label} |", "|---|---|"]
    rows += [f"| `{e['prompt']}` | {fmt_ci(figure(e) or {})} |" for e in entries]
    return rows + [""]
