"""The installed ``mirrorhall`` command, run as a user would (subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mirrorhall import __version__
from mirrorhall.agents.populations import get_population
from mirrorhall.agents.scene import run_scene
from mirrorhall.commands.run import scene_personas
from mirrorhall.envs.core import WorldConfig

EXE = Path(sys.executable).parent / "mirrorhall"


def cli(*args, timeout=120):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def table_rows(stdout: str) -> list[list[str]]:
    """The per-agent rows of the summary table, split on the 2+ spaces between columns."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines() if line.startswith("agent_")]


def test_help_lists_subcommands():
    out = cli("--help")
    assert out.returncode == 0
    listed = set(re.findall(r"^\s{4}(\w+)\s{2,}", out.stdout, flags=re.M))
    assert {"run", "demo"} <= listed, out.stdout
    run_help = cli("run", "--help")
    assert run_help.returncode == 0
    for flag in ("--population", "--agents", "--steps", "--seed", "--view-radius", "--render", "--no-progress"):
        assert flag in run_help.stdout


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"mirrorhall {__version__}"


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "mirrorhall", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run" in out.stdout


def test_run_prints_one_row_per_agent_matching_the_library():
    out = cli("run", "--agents", 6, "--steps", 20, "--seed", 1, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no progress bar, no warnings
    rows = table_rows(out.stdout)
    assert [r[0] for r in rows] == [f"agent_{i}" for i in range(6)]
    assert all(len(r) == 6 for r in rows), rows  # agent, persona, gems, imitates, match, belief
    header = out.stdout.splitlines()[0]
    assert "gems (r g b y)" in header and "persona" in header

    # the same scene through the library
    personas = scene_personas("crowd", 6, 4, 1)
    world = WorldConfig(n_agents=6, n_colors=4, max_cycles=20)
    ep = run_scene(world, personas, 20, 1, hypotheses=get_population("crowd").hypotheses(4, 6))
    for i, row in enumerate(rows):
        assert row[1] == personas[i].describe()
        gems = [int(x) for x in row[2].split()]
        assert gems == ep.collected[0, i].tolist(), (i, row)
        bel = ep.belief_on_target[0, i]
        assert row[5] == ("-" if np.isnan(bel) else f"{bel:.2f}")
        target = getattr(personas[i], "target", None)
        assert (row[3] == "-") if target is None else row[3].startswith(f"agent {target}")
    total = int(ep.collected.sum())
    assert total > 0
    assert f"20 steps, {total} gems collected" in out.stdout


def test_run_is_deterministic_and_seed_dependent():
    args = ("run", "--agents", 8, "--steps", 25, "--no-progress", "--population", "followers")
    a = cli(*args, "--seed", 3)
    b = cli(*args, "--seed", 3)
    c = cli(*args, "--seed", 4)
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_run_options_reach_the_world():
    out = cli("run", "--agents", 3, "--steps", 5, "--colors", 2, "--width", 13, "--height", 7,
              "--view-radius", 2, "--population", "species", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "gems (r g)" in out.stdout
    assert len(table_rows(out.stdout)) == 3
    assert all("random agent" in r[1] for r in table_rows(out.stdout))


def test_render_writes_a_gif_with_one_frame_per_state(tmp_path):
    path = tmp_path / "x" / "out.gif"
    out = cli("run", "--agents", 6, "--steps", 12, "--seed", 2, "--no-progress", "--render", path)
    assert out.returncode == 0, out.stderr
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == 12 + 1
        w, h = im.size
        assert w >= 11 * 8 and h >= 11 * 8
    assert f"animation: {path} (13 frames)" in out.stdout
    assert [p.name for p in path.parent.iterdir()] == ["out.gif"], "no temporary files left behind"


def test_progress_bar_goes_to_stderr_only():
    quiet = cli("run", "--agents", 4, "--steps", 10, "--seed", 5, "--no-progress")
    loud = cli("run", "--agents", 4, "--steps", 10, "--seed", 5)
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stdout == loud.stdout
    assert "10/10" in loud.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("--population", "mob"), "unknown population 'mob'"),
        (("--agents", 0), "n_agents"),
        (("--agents", 500), "n_agents"),
        (("--render", "out.mp4"), "--render must name a .gif file"),
        (("--view-radius", "abc"), "--view-radius must be an integer"),
        (("--view-radius", 0), "view_radius"),
        (("--steps", -1), "--steps must be >= 0"),
        (("--colors", 9), "n_colors"),
        (("--agents", 100), "grid too small"),
        (("--bogus",), "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(args, expect, tmp_path):
    steps = () if "--steps" in args else ("--steps", 3)
    out = subprocess.run([str(EXE), "run", *map(str, steps + args)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    if lines[0].startswith("usage:"):  # argparse: usage, then exactly one error line
        errors = [ln for ln in lines if "error:" in ln]
        assert len(errors) == 1 and errors[0] == lines[-1]
        assert re.match(r"mirrorhall( run)?: error: ", lines[-1]), lines[-1]
    else:
        assert len(lines) == 1, lines
        assert lines[0].startswith("mirrorhall: error:")
    assert expect in lines[-1]
    assert list(tmp_path.iterdir()) == [], "a failed run writes nothing"


def test_missing_subcommand_is_a_usage_error():
    out = cli()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("mirrorhall: error:")
