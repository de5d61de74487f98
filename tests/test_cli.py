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
REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"


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


# --- the error contract ----------------------------------------------------------------------------


def test_an_internal_error_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    """A plain ValueError from inside a command (numpy, a bug) is not a user error: exit 1."""
    import mirrorhall.commands.run as run_command
    from mirrorhall.cli import INTERNAL_ERROR_HINT, main

    def broken(cfg):
        np.linspace(0, 1, num=-1)  # raises a plain ValueError deep inside numpy

    monkeypatch.setattr(run_command, "run", broken)
    code = main(["run", "--agents", "2", "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert "ValueError" in err and "linspace" in err
    assert err.strip().splitlines()[-1] == INTERNAL_ERROR_HINT
    assert "mirrorhall: error:" not in err


def test_a_user_error_from_inside_a_command_is_one_line(monkeypatch, capsys):
    import mirrorhall.commands.run as run_command
    from mirrorhall.cli import main
    from mirrorhall.errors import DatasetError

    def refuse(cfg):
        raise DatasetError("/data/manifest.json is damaged;\nregenerate it")

    monkeypatch.setattr(run_command, "run", refuse)
    assert main(["run", "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines() == ["mirrorhall: error: /data/manifest.json is damaged;"]


@pytest.mark.parametrize(
    ("args", "expect", "command"),
    [
        (("run", "--agents", "x"), "error: --agents must be an integer, got 'x'", "run"),
        (("train", "--lr", "fast"), "error: --lr must be a number, got 'fast'", "train"),
        (("train", "--size", "huge", "--data", "d", "--out", "o"), "size must be one of tiny, small", None),
        (("run", "--bogus"), "unrecognized arguments: --bogus", "run"),
        (("train", "--steps", "3"), "the following arguments are required: --data, --out", "train"),
        (("probe",), "the following arguments are required: NAME, --checkpoint, --out", "probe"),
        (("frobnicate",), "invalid choice: 'frobnicate'", None),
        ((), "the following arguments are required: COMMAND", None),
    ],
)
def test_a_parser_error_is_one_line_with_a_help_hint(args, expect, command):
    out = cli(*args)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, lines  # no usage block
    assert lines[0].startswith("mirrorhall: error: ") and expect in lines[0], lines[0]
    if expect.startswith("size"):  # refused by TrainConfig's validation, not by the parser
        return
    hint = f"see 'mirrorhall {command} --help'" if command else "see 'mirrorhall --help'"
    assert lines[0].endswith(hint), lines[0]


# --- help generated from the configs ----------------------------------------------------------------


def flat(text: str) -> str:
    return " ".join(text.split())


def test_run_help_lists_the_populations_and_every_default():
    from dataclasses import MISSING, fields

    from mirrorhall.agents.populations import POPULATIONS
    from mirrorhall.commands.run import RunConfig

    text = flat(cli("run", "--help").stdout)
    assert f"One of: {', '.join(POPULATIONS)}." in text
    for f in fields(RunConfig):
        if not f.init:
            continue
        assert f.default is not MISSING
        if f.type in ("bool",):
            assert "--no-progress" in text and "(default: on; --no-progress turns it off)" in text
            continue
        assert f"--{f.name.replace('_', '-')}" in text, f.name
    for flag, default in (("--population", "crowd"), ("--agents", 8), ("--steps", 100), ("--seed", 0),
                          ("--view-radius", None), ("--width", 11), ("--height", 11), ("--colors", 4),
                          ("--render", None)):
        assert re.search(rf"{flag} \S+ .*?\(default: {default}\)", text), flag


def test_every_option_of_every_command_has_help_and_shows_its_default():
    from mirrorhall.cli import build_parser
    from mirrorhall.commands import COMMANDS

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS)
    for name, parser in commands.items():
        parser.format_help()  # adds the command's options
        options = [a for a in parser._actions if a.dest != "help"]
        assert options, name
        for action in options:
            assert action.help and len(action.help) > 20, (name, action.dest, action.help)
            if action.option_strings:
                assert "(default: " in action.help or "(required)" in action.help, (name, action.dest)


def test_existing_option_names_and_defaults_are_kept():
    """The flags and defaults scripts and docs use (before the parser was generated)."""
    from mirrorhall.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    expected = {
        "run": {"population": "crowd", "agents": 8, "steps": 100, "seed": 0, "view_radius": None, "width": 11,
                "height": 11, "colors": 4, "render": None, "progress": True},
        "generate": {"population": "crowd", "episodes": 256, "seed": 0, "agents": 8, "steps": 40,
                     "view_radius": None, "episodes_per_shard": 32, "prompts_per_step": 2, "workers": 0,
                     "ray_address": None, "processes": 1, "progress": True},
        "train": {"steps": 2000, "size": "default", "lr": 1e-3, "seed": 0, "eval_every": 200,
                  "checkpoint_every": 500, "episodes_per_batch": 8, "samples_per_episode": 128, "threads": 0,
                  "device": "cpu", "data_processes": 1, "resume": False, "ray": False, "workers": 2,
                  "ray_address": None, "progress": True},
        "act": {"population": "crowd", "agents": 8, "steps": 60, "seed": 0, "view_radius": None, "render": None,
                "progress": True},
        "probe": {"seed": 0, "episodes": None, "scale": "small", "population": None, "threads": 0, "progress": True},
        "demo": {"out": "out/demo", "seed": 0, "checkpoint": None, "from_scratch": False, "progress": True},
        "compare-direct": {"seed": 0, "personas": 4, "iterations": 10, "batch": 1000, "episodes": 8,
                           "population": None, "threads": 0, "seeds": 1, "budget": None, "tolerance": 0.02,
                           "worlds": 8, "resume": False},
    }
    required = {"generate": {"out"}, "train": {"data", "out"}, "act": {"checkpoint"}, "probe": {"checkpoint", "out"},
                "export": {"checkpoint", "out"}, "compare-direct": {"checkpoint", "out"}}
    for name, defaults in expected.items():
        parser = commands[name]
        parser.format_help()
        actions = {a.dest: a for a in parser._actions}
        for dest, default in defaults.items():
            assert actions[dest].default == default, (name, dest, actions[dest].default)
        for dest in required.get(name, ()):
            assert actions[dest].required, (name, dest)
    assert [a.option_strings for a in commands["run"]._actions if a.dest == "progress"] == [["--no-progress"]]


def test_run_never_imports_torch():
    code = ("import sys\n"
            "from mirrorhall.cli import main\n"
            "assert main(['run', '--agents', '3', '--steps', '2', '--no-progress']) == 0\n"
            "assert main(['run', '--agents', '0']) == 2\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- typed configs ----------------------------------------------------------------------------------


def test_configs_validate_once_with_config_errors():
    from mirrorhall.commands.act import ActConfig
    from mirrorhall.commands.run import RunConfig
    from mirrorhall.errors import ConfigError

    with pytest.raises(ConfigError, match="n_agents"):
        RunConfig(agents=0)
    with pytest.raises(ConfigError, match="unknown population 'mob'"):
        RunConfig(population="mob")
    with pytest.raises(ConfigError, match="NUL"):
        RunConfig(render="a\x00.gif")
    cfg = ActConfig(checkpoint="x", agents=4, prompt=("agent_1=behave as agent 3",),
                    switch=("5:agent_1=behave as yourself",))
    assert cfg.prompts == {1: "behave as agent 3"} and cfg.schedule == {5: {1: "behave as yourself"}}
    with pytest.raises(ConfigError, match="names agent 7, which is not in the scene"):
        ActConfig(checkpoint="x", agents=4, prompt=("agent_1=behave as agent 7",))
    with pytest.raises(ConfigError, match="--switch names agent_2, which has no --prompt"):
        ActConfig(checkpoint="x", agents=4, prompt=("agent_1=behave as yourself",), switch=("3:agent_2=x",))


def test_library_configs_are_built_from_the_flattened_options():
    """generate's options are GenerateConfig's fields plus the command's own; the parsed command
    holds the very GenerateConfig the library would build, and saves as nested JSON."""
    from mirrorhall.cli import build_parser
    from mirrorhall.commands.generate import GenerateCommand
    from mirrorhall.commands.options import build, to_json
    from mirrorhall.errors import ConfigError
    from mirrorhall.imitation.generate import GenerateConfig

    argv = ["generate", "--out", "d", "--episodes", "6", "--agents", "3", "--kind-weights", "1", "0", "0", "0", "0",
            "--processes", "2"]
    cmd = build(GenerateCommand, build_parser().parse_args(argv))
    assert cmd.config == GenerateConfig(episodes=6, agents=3, kind_weights=(1, 0, 0, 0, 0))
    assert (cmd.out, cmd.processes, cmd.workers, cmd.progress) == ("d", 2, 0, True)
    saved = to_json(cmd)
    assert saved["config"] == cmd.config.to_json() and saved["out"] == "d"
    with pytest.raises(ConfigError, match="kind_weights"):
        build(GenerateCommand, build_parser().parse_args(["generate", "--out", "d", "--kind-weights", "1"]))
    with pytest.raises(ConfigError, match="--processes runs without Ray"):
        build(GenerateCommand, build_parser().parse_args([*argv, "--workers", "2"]))


@pytest.mark.slow  # a probe run in a fresh interpreter
@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "checkpoints" / "reference").is_dir(),
                    reason="reference checkpoint not built")
def test_probe_saves_its_config_beside_its_results(tmp_path):
    out = tmp_path / "probes"
    r = cli("probe", "calibration", "--checkpoint", REFERENCE, "--out", out, "--episodes", 1, "--threads", 1,
            timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json", "calibration.png", "probe_config.json"]
    import json

    saved = json.loads((out / "probe_config.json").read_text())
    assert saved == {"command": "ProbeConfig", "name": "calibration", "checkpoint": str(REFERENCE),
                     "out": str(out), "seed": 0, "seeds": 1, "episodes": 1, "scale": "small", "prompt": [],
                     "population": None, "targets": "traits", "threads": 1,
                     "progress": True}
    report = cli("report", out)
    assert report.returncode == 0 and (out / "report.md").is_file()
    missing = cli("report", tmp_path / "nothing")
    assert missing.returncode == 2 and missing.stderr.startswith("mirrorhall: error: ")
    assert len(missing.stderr.splitlines()) == 1


def test_the_shipped_reference_checkpoint_is_found_without_the_source_tree_path():
    from mirrorhall.checkpoints import reference_checkpoint

    ref = reference_checkpoint()
    assert ref == REFERENCE.resolve()
    assert (ref / "checkpoint.json").is_file() and (ref / "model.safetensors").is_file()
