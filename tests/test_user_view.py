"""What the user sees: one-line errors and warnings, quiet surprises made loud, progress that
closes before an error, plots that carry their intervals and targets, the report's glossary, the
animation's caption and agent colours."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

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
