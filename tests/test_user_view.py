"""What the user sees: one-line errors and warnings, quiet surprises made loud, progress that
closes before an error, plots that carry their intervals and targets, the report's glossary, the
animation's caption and agent colours."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from mirrorhall.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "checkpoints" / "reference"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, pattern: str) -> None:
    """Exit 2 and stderr ending in exactly one ``mirrorhall: error:`` line matching ``pattern``."""
    lines = [x for x in re.split(r"[\r\n]", err) if x.strip()]
    assert code == 2, err
    errors = [x for x in lines if x.startswith("mirrorhall: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    assert re.search(pattern, errors[0]), errors[0]


ACT = ["act", "--checkpoint", REFERENCE, "--steps", 3, "--no-progress", "--threads", 1]


@pytest.mark.parametrize("extra, pattern", [
    (["--prompt", "agent_0=behave as agent 3", "--prompt", "agent_0=behave as yourself"],
     r"--prompt names agent_0 twice \('behave as agent 3' and 'behave as yourself'\)"),
    (["--prompt", "agent_1=behave as agent 3", "--prompt", " agent_1 = behave as agent 3"],
     r"--prompt names agent_1 twice"),
    (["--prompt", "agent_0=behave as agent 3", "--switch", "99:agent_0=behave as yourself"],
     r"--switch '99:agent_0=behave as yourself': step 99 is not in the scene; .* 1\.\.2 \(--steps 3\)"),
    (["--prompt", "agent_0=behave as agent 3", "--switch", "3:agent_0=behave as yourself"],
     r"step 3 is not in the scene"),
    (["--prompt", "agent_0=behave as agent 3", "--switch", "0:agent_0=behave as yourself"],
     r"step 0 is not in the scene"),
    (["--prompt", "agent_0=behave as agent 3", "--switch", "1:agent_0=behave as yourself",
      "--switch", "1:agent_0=behave as agent 2"], r"--switch names agent_0 twice at step 1"),
    (["--prompt", "agent_0=behave as agent 3", "--switch", "٣:agent_0=behave as yourself"],
     r"--switch must look like"),
])
def test_act_refuses_repeated_prompts_and_switches_outside_the_scene(extra, pattern, capsys, tmp_path):
    code, out, err = run_cli([*ACT, *extra], capsys)
    one_error(code, err, pattern)
    assert out == ""


def test_a_switch_inside_the_scene_is_shown_in_the_table(capsys):
    code, out, err = run_cli([*ACT, "--prompt", "agent_0=behave as agent 3", "--switch", "2:agent_0=behave as yourself"],
                             capsys)
    assert code == 0 and err == "", err
    assert "from step 2: 'behave as yourself'" in out


@pytest.mark.parametrize("argv, pattern", [
    (["probe", "calibration", "--checkpoint", REFERENCE, "--out", "{tmp}/p", "--episodes", 0],
     r"--episodes must be >= 1, got 0; leave it out to use the --scale default"),
    (["generate", "--out", "{tmp}/d", "--processes", 0], r"--processes must be >= 1"),
])
def test_zero_counts_that_meant_something_else_are_refused(argv, pattern, capsys, tmp_path):
    code, out, err = run_cli([str(a).replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    one_error(code, err, pattern)
    assert list(tmp_path.iterdir()) == []


def test_parser_errors_are_one_line_with_the_same_prefix_and_a_help_hint(capsys):
    code, out, err = run_cli(["run", "--agents", "abc"], capsys)
    one_error(code, err, r"--agents must be an integer, got 'abc'; see 'mirrorhall run --help'$")
    assert "usage:" not in err and len(err.splitlines()) == 1
    code, out, err = run_cli(["run", "--no-such-flag"], capsys)
    one_error(code, err, r"unrecognized arguments: --no-such-flag; see 'mirrorhall run --help'$")
    assert len(err.splitlines()) == 1


# --- prompts the model cannot read --------------------------------------------------------------


@pytest.mark.parametrize("prompt, pattern", [
    ("behave as agent 3 plz", r"does not know the word\(s\) 'plz'"),
    ("béhave as agent 3", r"does not know the word\(s\) 'b', 'have' .*odd character\(s\) 'é' \(U\+00E9\)"),
    ("behave as agent 3 \U0001F600", r"odd character\(s\) '\U0001F600' \(U\+1F600\) are skipped"),
    ("behave as agent ３", r"does not know the word\(s\) '３'"),
    ("behave\x1b as yourself", r"odd character\(s\) '\\x1b' \(U\+001B\)"),
])
def test_act_warns_in_one_line_about_words_the_model_does_not_know(prompt, pattern, capsys):
    code, out, err = run_cli([*ACT, "--prompt", f"agent_0={prompt}"], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirrorhall: warning: prompt "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "agent_0" in out


def test_known_prompts_and_punctuation_give_no_warning(capsys):
    code, out, err = run_cli([*ACT, "--prompt", "agent_0=Behave as agent 3!", "--switch",
                              "1:agent_0=pretend to be agent 1 pretending to be you."], capsys)
    assert code == 0 and err == "", err


def test_a_switched_prompt_is_named_too_and_each_prompt_once(capsys):
    code, out, err = run_cli([*ACT, "--prompt", "agent_0=behave as agent 3 plz", "--prompt", "agent_1=behave as agent 3 plz",
                              "--switch", "1:agent_0=behave as agnet 2"], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert "'plz'" in lines[0] and "'agnet'" in lines[1]


def test_a_probe_names_the_unknown_words_of_a_users_wording_once(capsys, tmp_path):
    """A probe asks the same wording for many scenes and steps: its unknown words are named once.
    (The probes' built-in held-out and nonsense wordings are deliberate tests and warn nothing:
    ``probe all --no-progress`` writes nothing to stderr, test_probe_shows_a_bar_per_probe...)"""
    base = ["probe", "imitate", "--checkpoint", REFERENCE, "--threads", 1, "--scale", "tiny", "--episodes", 1,
            "--no-progress"]
    code, _, err = run_cli([*base, "--out", tmp_path / "mine", "--prompt", "zorp agent {k} plz"], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirrorhall: warning: prompt "), err
    assert "'zorp', 'plz'" in lines[0]


def test_the_python_api_warns_with_an_input_warning():
    from mirrorhall.envs.core import WorldConfig, WorldCore
    from mirrorhall.errors import InputWarning
    from mirrorhall.imitation.checkpoint import load_policy

    policy = load_policy(REFERENCE, WorldCore(WorldConfig(n_agents=4)), [0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy.initial_state(1, "behave as agent 2 quickly")
        policy.initial_state(1, "behave as agent 2")
    mine = [w for w in caught if issubclass(w.category, InputWarning)]
    assert len(mine) == 1 and "'quickly'" in str(mine[0].message)
    assert "\n" not in str(mine[0].message)


def test_unread_parts_are_exact():
    from mirrorhall.imitation.model_io import unread_parts
    from mirrorhall.imitation.tokenizer import Tokenizer

    tok = Tokenizer.default()
    assert unread_parts(tok, "behave as agent 3.") == ([], [])
    assert unread_parts(tok, "Behave as  Agent_3 !") == ([], [])
    assert unread_parts(tok, "zzz behave zzz as yy") == (["zzz", "yy"], [])
    assert unread_parts(tok, "behave as agent 3\u200b") == ([], ["\u200b"])


# --- plots and the report -----------------------------------------------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def committed(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def drawn(name: str, tmp_path):
    from mirrorhall.analysis.report import PROBES

    fig = PROBES[name].plot(committed(name), tmp_path / f"{name}.png")
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    return fig


def labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


@pytest.mark.parametrize("name, least", [("calibration", 6), ("second_order", 4 + 2), ("mirror_test", 4),
                                         ("imitate", 3 + 1), ("outcome", 2)])
def test_plots_carry_the_95_percent_intervals_of_the_report(name, least, tmp_path):
    from matplotlib.container import ErrorbarContainer

    fig = drawn(name, tmp_path)
    bars = [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) >= least, name
    # the bars span the committed intervals: the lowest lower end is drawn
    ys = np.concatenate([seg[:, 1] for c in bars for coll in c.lines[2] for seg in coll.get_segments()])
    r = committed(name)
    key = {"calibration": "kl_bayes_model", "second_order": "ce_model", "mirror_test": "accuracy_model",
           "imitate": "ce_model", "outcome": "achieved"}[name]
    lows = [c[key]["ci95"][0] for c in r["conditions"] if c[key]["ci95"][0] is not None]
    assert np.isclose(ys, min(lows)).any()


@pytest.mark.parametrize("name, value", [("calibration", 0.05), ("describe", 0.05), ("imitate", 0.8),
                                         ("second_order", 0.0), ("mirror_test", 0.9)])
def test_plots_draw_their_targets(name, value, tmp_path):
    fig = drawn(name, tmp_path)
    targets = [line for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith("target")]
    assert targets, name
    assert any(np.allclose(line.get_ydata(), value) for line in targets)
    assert any(t.startswith("target") for ax in fig.axes for t in labels(ax))


def test_outcome_ticks_are_whole_gems_and_calibration_explains_its_dotted_lines(tmp_path):
    ax = drawn("outcome", tmp_path).axes[0]
    ticks = ax.get_xticks()
    assert np.array_equal(ticks, np.round(ticks)) and list(ticks) == [0, 1, 2, 3, 4]
    cal = drawn("calibration", tmp_path).axes[0]
    assert any(t.startswith("dotted: KL(Bayes_train") for t in labels(cal))
    assert "dotted" not in cal.get_ylabel()


def test_the_report_ends_with_a_glossary_of_its_terms(tmp_path):
    from mirrorhall.analysis.report import write_report

    for path in RESULTS.glob("*.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    text = write_report(tmp_path).read_text()
    glossary = text[text.index("## Glossary"):]
    for term in ("pi_test", "SELF", "OTHER(theta)", "N_past", "Bayes_train", "fraction of attainable information",
                 "95% interval", "KL", "cross-entropy"):
        assert f"**{term}" in glossary or f", {term}**" in glossary, term
    assert text.index("## Glossary") > text.index("## outcome")


# --- progress bars and third-party log lines ----------------------------------------------------


def test_an_error_while_the_progress_bar_shows_starts_a_line_of_its_own_and_ends_stderr(capsys, tmp_path):
    """The bar is open when generate finds the folder holds another dataset: it is closed first,
    the error is the last line, and no bar is drawn after it (the error was glued to the bar)."""
    out = tmp_path / "d"
    code, _, err = run_cli(["generate", "--out", out, "--episodes", 4, "--agents", 3, "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["generate", "--out", out, "--episodes", 4, "--agents", 3, "--seed", 5], capsys)
    assert "shards:" in err  # the bar was shown
    one_error(code, err, r"holds a different dataset")
    assert err.endswith("\n") and "\nmirrorhall: error:" in err
    assert err.count("mirrorhall: error:") == 1 and "shards" not in err[err.index("mirrorhall: error:"):]


def test_close_bars_leaves_no_bar_to_redraw(capsys):
    import sys

    from mirrorhall.commands.console import bar, close_bars

    b = bar(10, "stage", "step")
    b.update(3)
    close_bars()
    assert b.disable
    print("mirrorhall: error: x", file=sys.stderr)
    del b
    err = capsys.readouterr().err
    assert err.endswith("\nmirrorhall: error: x\n") and "stage" in err


# --- the animation -------------------------------------------------------------------------------


def _lab(rgb) -> np.ndarray:
    c = np.asarray(rgb, float) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_agents_are_told_apart_from_gems_and_from_each_other():
    """CIE76 distances: every agent outline of ids 0-15 at least 40 from every gem colour, and
    every two of them at least 20 apart (agents 3 and 11 were both green, 0 and 8 both red)."""
    from mirrorhall.envs.render import GEM_RGB, agent_colors

    fill, line = agent_colors(16)
    agents, gems = _lab(line), _lab(GEM_RGB)
    assert np.linalg.norm(agents[:, None] - gems[None], axis=-1).min() >= 40
    d = np.linalg.norm(agents[:, None] - agents[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 20
    fill64, line64 = agent_colors(64)
    assert len({tuple(c) for c in line64.tolist()}) == 64
    assert (fill64.astype(int).sum(1) > line64.astype(int).sum(1)).all()  # light fill, dark ring: the id reads


def test_the_caption_adds_rows_under_the_step_and_marks_a_switch():
    from mirrorhall.envs.core import WorldConfig, WorldCore
    from mirrorhall.envs.render import EMPHASIS_RGB, footer_height, render_rgb

    config = WorldConfig(n_agents=4)
    state = WorldCore(config).reset(1, np.random.default_rng(0))
    plain = render_rgb(config, state)
    lines = [("agent 0 (model): 'behave as agent 2'", False), ("switch at t=3: agent 1 (model): 'x'", True)]
    shown = render_rgb(config, state, caption=lines)
    foot = footer_height(32)
    assert shown.shape == (plain.shape[0] + 2 * foot, *plain.shape[1:])
    assert (shown[: plain.shape[0]] == plain).all()  # grid and step row unchanged
    first, second = shown[plain.shape[0]: plain.shape[0] + foot], shown[plain.shape[0] + foot:]
    blank = render_rgb(config, state, caption=[("", False), ("", True)])[plain.shape[0]:]
    assert (first != blank[:foot]).any(-1).sum() > 50  # text drawn
    assert (second == EMPHASIS_RGB).all(-1).mean() > 0.5 and not (first == EMPHASIS_RGB).all(-1).any()


def test_act_captions_name_the_driven_agents_their_prompt_and_switches():
    from mirrorhall.commands.act import SWITCH_SHOWN, caption

    prompts = {0: "behave as yourself", 3: "behave as agent 1"}
    schedule = {20: {0: "behave as agent 2"}}
    assert caption(prompts, schedule, 0) == [("agent 0 (model): 'behave as yourself'", False),
                                             ("agent 3 (model): 'behave as agent 1'", False)]
    assert caption(prompts, schedule, 20)[0] == ("switch at t=20: agent 0 (model): 'behave as agent 2'", True)
    assert caption(prompts, schedule, 20 + SWITCH_SHOWN - 1)[0][1]
    assert caption(prompts, schedule, 20 + SWITCH_SHOWN)[0] == ("agent 0 (model): 'behave as agent 2' (since t=20)", False)


def test_the_act_animation_carries_the_caption(capsys, tmp_path):
    from PIL import Image

    from mirrorhall.envs.render import EMPHASIS_RGB, footer_height

    gif = tmp_path / "a.gif"
    code, out, err = run_cli([*ACT[:4], 4, *ACT[5:], "--prompt", "agent_0=behave as agent 3",
                              "--switch", "2:agent_0=behave as yourself", "--render", gif], capsys)
    assert code == 0, err
    im = Image.open(gif)
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB")))
    height = frames[0].shape[0]
    assert height == 11 * 32 + 2 * footer_height(32)  # the step row and one caption row
    last_row = [f[height - footer_height(32) + 2: height - 2] for f in frames]
    marked = [bool((np.abs(r.astype(int) - EMPHASIS_RGB).sum(-1) < 30).mean() > 0.5) for r in last_row]
    assert marked == [False, False, True, True, True]


# --- progress of long commands ------------------------------------------------------------------


@pytest.mark.slow
def test_probe_shows_a_bar_per_probe_that_completes_and_changes_no_result(capsys, tmp_path):
    from mirrorhall.analysis.report import PROBES

    base = ["probe", "all", "--checkpoint", REFERENCE, "--threads", 1, "--episodes", 2]
    code, out, err = run_cli([*base, "--out", tmp_path / "bars"], capsys)
    assert code == 0, err
    shown = [x.strip() for x in re.split(r"[\r\n]", err) if x.strip()]
    for name in PROBES:
        done = [re.match(rf"{name}: 100%\|.*\| (\d+)/(\d+) ", x) for x in shown]
        done = [m for m in done if m]
        assert done and all(m.group(1) == m.group(2) != "0" for m in done), (name, err[-500:])
    # nothing but bars: no probe warns about its own (held-out, nonsense) wordings
    others = [x for x in shown if not re.match(rf"({'|'.join(PROBES)}): +\d+%\|", x)]
    assert not others, others[:3]
    # a fast probe and one with held-out wordings (language, the one with the most, takes 45 s more
    # and its wordings were checked quiet in the run above)
    for name in ("calibration", "describe"):
        quiet = tmp_path / f"quiet-{name}"
        code, _, err = run_cli([*base[:1], name, *base[2:], "--out", quiet, "--no-progress"], capsys)
        assert code == 0 and err == "", err
        a, b = (json.loads((d / f"{name}.json").read_text()) for d in (tmp_path / "bars", quiet))
        a.pop("seconds"), b.pop("seconds")
        assert json.dumps(a) == json.dumps(b), name


def test_too_few_episodes_for_held_out_evaluation_is_a_one_line_warning(capsys, tmp_path):
    data, run = tmp_path / "d", tmp_path / "r"
    code, _, err = run_cli(["generate", "--out", data, "--episodes", 4, "--agents", 3, "--no-progress"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["train", "--data", data, "--out", run, "--steps", 2, "--size", "tiny", "--threads", 1,
                              "--no-progress"], capsys)
    assert code == 0, err
    assert err.splitlines() == ["mirrorhall: warning: held-out evaluation is empty: every 10th episode is held out "
                                "and the data holds 4; generate at least 10 episodes for eval figures"]
    data10, run10 = tmp_path / "d10", tmp_path / "r10"
    run_cli(["generate", "--out", data10, "--episodes", 10, "--agents", 3, "--no-progress"], capsys)
    code, out, err = run_cli(["train", "--data", data10, "--out", run10, "--steps", 2, "--size", "tiny", "--threads", 1,
                              "--no-progress"], capsys)
    assert code == 0 and err == "", err


@pytest.mark.slow
@pytest.mark.ray
def test_compare_direct_keeps_rllib_warnings_off_stderr_in_a_log_file(tmp_path):
    """RLlib's "You are running PPO on the new API stack!" used to come before any error line;
    now stderr holds nothing but mirrorhall's own progress bar (which reaches 2/2: one persona's
    model scenes and one PPO iteration), and the warning is in compare_direct.log."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "mirrorhall"
    out = tmp_path / "cd"
    r = subprocess.run([str(exe), "compare-direct", "--checkpoint", str(REFERENCE), "--out", str(out), "--personas", "1",
                        "--iterations", "1", "--batch", "200", "--episodes", "1", "--threads", "1", "--learner", "rllib"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    shown = [part for part in re.split(r"[\r\n]", r.stderr) if part.strip()]
    assert shown and all(part.startswith("compare-direct") for part in shown), r.stderr
    assert "2/2" in shown[-1], shown[-1]
    assert "new API stack" in (out / "compare_direct.log").read_text()
