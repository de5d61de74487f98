"""Property-based fuzzing of every input surface: each input either works or is refused with a
ValueError (a one-line ``mirrorhall: error:`` / argparse usage error, exit 2, on the command line).
Never another exception type, a hang, or silent garbage such as observations outside their space.

Runs derandomized (the same examples every time, no ``.hypothesis`` database) so that CI is
stable; ``MIRRORHALL_FUZZ_RANDOM=1`` draws fresh examples and ``MIRRORHALL_FUZZ_SCALE=10`` runs ten
times as many, to explore.
"""

from __future__ import annotations

import json
import os
import re
import string
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mirrorhall.agents.personas import (
    PERSONA_KINDS,
    Believer,
    Imitator,
    Memoryless,
    Mirror,
    Species,
    Trait,
    persona_from_json,
)
from mirrorhall.cli import build_parser, main
from mirrorhall.envs import mirrorhall_v0
from mirrorhall.envs.core import COLOR_NAMES, N_ACTIONS, WorldConfig
from mirrorhall.imitation.model_io import check_prompt
from mirrorhall.imitation.prompts import TEMPLATES, Kind, parse_prompt, render
from mirrorhall.imitation.tokenizer import Tokenizer

SCALE = float(os.environ.get("MIRRORHALL_FUZZ_SCALE", "1"))


def fuzz(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    derandomize=os.environ.get("MIRRORHALL_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# --- building blocks -------------------------------------------------------------------------------

NOT_TEXT = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 8),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=4),
    st.lists(st.integers(-2, 6), max_size=3), st.tuples(st.integers(0, 5), st.integers(0, 5)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(np.int64, st.integers(-10, 10)), st.builds(np.float32, st.floats(-10, 10)),
    st.builds(np.bool_, st.booleans()), st.just(object()), st.complex_numbers(max_magnitude=3),
)
ANYTHING = st.one_of(NOT_TEXT, st.text(max_size=8))
"""Values of every type a caller might pass by mistake."""

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
"""Anything ``json.loads`` can return (NaN included: Python's json reads it)."""

# texts: control characters, non-ASCII letters and digits (Arabic-Indic, full-width), whitespace
ODD = "\x00\x01\x07\x1b\t\n\r\x0b\x0c\u200b\u00a0\u2028éßİ\u0663\uff13Ωж中😀agent_ "
TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=string.ascii_letters + string.digits + " _.!" + ODD, max_size=80),
    st.builds(lambda unit, n: unit * n, st.text(min_size=1, max_size=4), st.integers(1, 60_000)),
)


def template_prompt(kind, template, k, n, color, horizon, likes, social, style, follow):
    """A prompt written from a template (held-out ones included), with arbitrary numbers."""
    kind = Kind(kind)
    template %= len(TEMPLATES[kind])
    if kind == Kind.DESCRIBE:
        trait = Trait(likes, social, style, follow if social == "follow" else None)
        return render(kind, template, trait=trait).text
    if kind == Kind.RETURN:
        return render(kind, template, outcome=(n, color, horizon)).text
    if kind in (Kind.OTHER, Kind.SECOND):
        return render(kind, template, target=k).text
    return render(kind, template).text


TEMPLATE_TEXT = st.builds(
    template_prompt, st.sampled_from(list(Kind)), st.integers(0, 9), st.integers(0, 10**12),
    st.integers(0, 300), st.sampled_from(COLOR_NAMES + ("any",)), st.integers(0, 10**6),
    st.sampled_from(COLOR_NAMES + ("none",)), st.sampled_from(("none", "approach", "avoid", "follow")),
    st.sampled_from(("focused", "casual", "erratic")), st.integers(0, 99),
)


def decorate(text: str, case: int, pad: str, end: str) -> str:
    """Change case, pad with whitespace, add a full stop: a prompt a person might type."""
    text = [text, text.upper(), text.title()][case % 3]
    return f"{pad}{text}{end}{pad}"


PROMPT = st.one_of(
    TEXT,
    st.builds(decorate, TEMPLATE_TEXT, st.integers(0, 2), st.sampled_from(("", " ", "\t\n ")),
              st.sampled_from(("", ".", "!", " .", "?"))),
    st.builds(lambda a, b: a + b, TEMPLATE_TEXT, TEXT),
)

# --- env configs -----------------------------------------------------------------------------------

INT_FIELDS = ("n_agents", "width", "height", "n_colors", "gems_per_color", "max_cycles")
NUMBER = st.one_of(st.integers(-3, 70), st.integers(-(2**70), 2**70), st.sampled_from((0, 1, 256, 257, 2**24, 2**24 + 1)),
                   st.builds(np.int64, st.integers(1, 20)), ANYTHING)
WALLS = st.one_of(
    st.lists(st.tuples(st.integers(-1, 12), st.integers(-1, 12)), max_size=4),
    st.lists(st.lists(st.one_of(st.integers(0, 9), st.floats(0, 9), st.text(max_size=2)), max_size=3), max_size=3),
    ANYTHING,
)
FUZZ_CONFIG = st.fixed_dictionaries({}, optional={
    **{f: NUMBER for f in INT_FIELDS},
    "view_radius": st.one_of(st.none(), NUMBER),
    "interior_walls": WALLS,
})
PLAUSIBLE_CONFIG = st.fixed_dictionaries({}, optional={  # mostly in range, so the accepted side is exercised
    "n_agents": st.integers(1, 40), "width": st.integers(3, 24), "height": st.integers(3, 24),
    "n_colors": st.integers(1, 8), "gems_per_color": st.integers(1, 4), "max_cycles": st.integers(1, 4),
    "view_radius": st.one_of(st.none(), st.integers(1, 6)),
    "interior_walls": st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), max_size=4),
})
CONFIG = st.one_of(FUZZ_CONFIG, PLAUSIBLE_CONFIG)


def good_int(value, lo: int, hi: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and lo <= value <= hi


@fuzz(300)
@given(kwargs=CONFIG, render_mode=st.one_of(st.none(), st.sampled_from(("ansi", "rgb_array")), ANYTHING),
       seed=st.integers(0, 2**32))
def test_env_config_works_or_raises_value_error(kwargs, render_mode, seed):
    try:
        WorldConfig(**kwargs)
        config_ok = True
    except ValueError:
        config_ok = False
    try:
        env = mirrorhall_v0.parallel_env(render_mode=render_mode, **kwargs)
    except ValueError:
        event("refused")
        return
    event("accepted")
    assert config_ok, "the env accepted a config that WorldConfig refuses"
    cfg = env.config
    # nothing accepted by silent coercion: every int field is a true integer in range
    for name, (lo, hi) in {"n_agents": (1, 256), "width": (3, 64), "height": (3, 64), "n_colors": (1, 8),
                           "gems_per_color": (1, 16), "max_cycles": (1, 2**24)}.items():
        assert good_int(getattr(cfg, name), lo, hi), (name, getattr(cfg, name))
    assert cfg.view_radius is None or good_int(cfg.view_radius, 1, 64)
    assert all(good_int(r, 1, cfg.height - 2) and good_int(c, 1, cfg.width - 2) for r, c in cfg.interior_walls)
    for name, value in kwargs.items():
        if name != "interior_walls":
            assert getattr(cfg, name) == value
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        check_observations(env, obs)
        if not env.agents:
            break
        obs, rew, term, trunc, _ = env.step({a: int(x) for a, x in zip(env.agents, rng.integers(0, N_ACTIONS, len(env.agents)), strict=True)})
        assert set(rew) == set(term) == set(trunc) == set(obs)
    if render_mode is not None:
        frame = env.render()
        assert isinstance(frame, str) if render_mode == "ansi" else frame.dtype == np.uint8


def check_observations(env, obs) -> None:
    """Every observation and the state lie in their declared spaces: no silent garbage."""
    assert obs and set(obs) <= set(env.possible_agents)  # after the last step: every agent's final obs
    for agent, o in obs.items():
        space = env.observation_space(agent)
        assert o.shape == space.shape and o.dtype == space.dtype
        assert np.isfinite(o).all()
        assert space.contains(o), (agent, o.min(), o.max(), space.high.max())
    state = env.state()
    assert env.state_space.contains(state)


# --- actions ---------------------------------------------------------------------------------------

AGENT_KEY = st.one_of(st.sampled_from([f"agent_{i}" for i in range(6)]), st.text(max_size=8), ANYTHING.filter(
    lambda x: _hashable(x)))
ACTION = st.one_of(st.integers(0, 4), st.builds(np.int64, st.integers(0, 4)), st.builds(np.uint8, st.integers(0, 4)),
                   st.integers(-(2**70), 2**70), ANYTHING)


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


ACTIONS = st.one_of(st.dictionaries(AGENT_KEY, ACTION, max_size=5),
                    st.dictionaries(st.sampled_from([f"agent_{i}" for i in range(4)]), ACTION, max_size=4),
                    ANYTHING)


def valid_action(a) -> bool:
    return good_int(a, 0, N_ACTIONS - 1)


@fuzz(300)
@given(actions=ACTIONS, seed=st.integers(0, 1000))
def test_step_accepts_exactly_the_valid_actions_and_refuses_the_rest(actions, seed):
    env = mirrorhall_v0.parallel_env(n_agents=4, max_cycles=3)
    env.reset(seed=seed)
    before = env.world_state.copy()
    valid = isinstance(actions, dict) and all(
        isinstance(k, str) and k in env.possible_agents and valid_action(v) for k, v in actions.items())
    try:
        obs, *_ = env.step(actions)
    except ValueError:
        assert not valid, f"a valid action dict was refused: {actions!r}"
        assert env.world_state.t == before.t  # a refused step changes nothing
        np.testing.assert_array_equal(env.world_state.agent_pos, before.agent_pos)
        np.testing.assert_array_equal(env.world_state.gem_pos, before.gem_pos)
        return
    assert valid, f"an invalid action was accepted: {actions!r}"
    assert env.world_state.t == 1
    expected = [int(actions.get(a, 0)) for a in env.possible_agents]
    assert env.world_state.last_action[0].tolist() == expected
    check_observations(env, obs)


# --- reset options and seeds -------------------------------------------------------------------------

COLOR = st.one_of(st.sampled_from(COLOR_NAMES + ("any", "none", "Red", "")), ANYTHING)
OPTIONS = st.one_of(
    st.none(), ANYTHING, JSON,
    st.fixed_dictionaries({"valued": st.dictionaries(AGENT_KEY, COLOR, max_size=4)},
                          optional={"other": JSON}),
    st.fixed_dictionaries({"valued": st.one_of(ANYTHING, JSON)}),
)


@fuzz(300)
@given(options=OPTIONS, seed=st.one_of(st.integers(0, 2**64), st.none(), ANYTHING))
def test_reset_options_and_seeds_work_or_raise_value_error(options, seed):
    env = mirrorhall_v0.parallel_env(n_agents=4, n_colors=3)
    seed_ok = seed is None or good_int(seed, 0, float("inf"))
    spec = options.get("valued", {}) if isinstance(options, dict) else {}
    options_ok = isinstance(spec, dict) and all(
        isinstance(k, str) and k in env.possible_agents and isinstance(v, str) and v in (*COLOR_NAMES[:3], "any")
        for k, v in spec.items())
    try:
        obs, infos = env.reset(seed=seed, options=options)
    except ValueError:
        assert not (seed_ok and options_ok), (seed, options)
        return
    assert seed_ok and options_ok, (seed, options)
    check_observations(env, obs)
    for agent, o in obs.items():  # the goal segment says what the options asked for
        goal = o[-4:]
        want = spec.get(agent, "any")
        assert goal.argmax() == (3 if want == "any" else COLOR_NAMES.index(want)) and goal.sum() == 1


def test_same_seed_given_as_numpy_or_python_int_is_the_same_world():
    a = mirrorhall_v0.parallel_env(n_agents=3)
    b = mirrorhall_v0.parallel_env(n_agents=3)
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=np.int64(7))
    for agent in oa:
        np.testing.assert_array_equal(oa[agent], ob[agent])


# --- prompts, tokenizer, check_prompt -----------------------------------------------------------------

TOKENIZER = Tokenizer.default()


def timed(fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args), None
    except ValueError as err:
        return None, err
    finally:
        assert time.perf_counter() - t0 < 1.0, f"{fn.__name__} took over 1 s on a {len(str(args[0]))}-char input"


@fuzz(500)
@given(text=PROMPT, n_agents=st.integers(1, 256), max_len=st.one_of(st.none(), st.integers(0, 40)))
def test_prompt_text_is_parsed_tokenized_and_checked_or_refused(text, n_agents, max_len):
    prompt, perr = timed(parse_prompt, text)
    if prompt is not None:
        assert parse_prompt(prompt.text) == prompt  # the canonical text reads back to the same prompt
        assert prompt.text == render(prompt.kind, prompt.template, target=prompt.target, trait=prompt.trait,
                                     outcome=prompt.outcome, surface=prompt.surface).text
    else:
        assert len(str(perr)) < 600, "the message quotes a long prompt cut short"
    ids = TOKENIZER.encode(text, max_len)
    assert all(isinstance(i, int) and 1 <= i < len(TOKENIZER) for i in ids)  # never padding, never out of range
    if max_len is not None:
        assert len(ids) <= max_len
    checked, cerr = timed(check_prompt, text, n_agents)
    if cerr is not None:
        assert text.strip() == "" or "which is not in the scene" in str(cerr)
    else:
        assert checked == text
    if prompt is not None and prompt.target is not None:
        assert (cerr is None) == (prompt.target < n_agents), (text, n_agents)


@fuzz(60)
@given(k=st.integers(0, 10**30), n_agents=st.integers(1, 64), template=st.integers(0, 9),
       kind=st.sampled_from((Kind.OTHER, Kind.SECOND)))
def test_unknown_agent_ids_are_refused_with_the_id_named(k, n_agents, template, kind):
    text = render(kind, template % len(TEMPLATES[kind]), target=k).text
    if k < n_agents:
        assert check_prompt(text, n_agents) == text
    else:
        with pytest.raises(ValueError, match=rf"names agent {str(k)[:12]}.*not in the scene \(agents 0\.\.{n_agents - 1}\)"):
            check_prompt(text, n_agents)
    prompt, err = timed(parse_prompt, text)
    assert (prompt is not None and prompt.target == k) or (err is not None and "too large" in str(err))


@fuzz(40)
@given(value=NOT_TEXT)
def test_non_text_prompts_are_refused(value):
    with pytest.raises(ValueError, match="non-empty text"):
        parse_prompt(value)
    with pytest.raises(ValueError, match="non-empty text"):
        check_prompt(value, 4)
    assert all(1 <= i < len(TOKENIZER) for i in TOKENIZER.encode(value))  # str(value), never an error


@pytest.mark.parametrize("text", ["behave as yourself" + " " * 200_000 + "x", " " * 200_000 + "x",
                                  "agent " * 100_000, "behave as agent " + "9" * 100_000,
                                  "behave as agent 3" + " ." * 100_000,
                                  # the persona families' descriptions: repeated cells, colours, long numbers
                                  "behave as a patrolling agent that walks the loop " + "(1, 2), " * 30_000 + "x",
                                  "behave as a patrolling agent that walks the loop (1, 2)" + ", (3, 4)" * 25_000
                                  + " and strays 1" + "0" * 50_000,
                                  "be a focused collector that collects " + "red gems, then " * 14_000 + "x",
                                  "be a contrarian agent that does the opposite of agent " + "9" * 200_000,
                                  "be a focused explorer that avoids the last " + "7" * 200_000 + " cells",
                                  "be a patrolling agent that walks the loop (1, 2), (3, 4) and strays "
                                  + "1" * 100_000 + "." + "2" * 100_000 + "% of the time x"])
def test_very_long_prompts_take_linear_time_and_short_messages(text):
    """200 kB prompts: refused in well under a second (the parser once took O(n^2), 33 s at 100 kB)."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as err:
        parse_prompt(text)
    assert time.perf_counter() - t0 < 0.5
    assert len(str(err.value)) < 400, "the message quotes the prompt cut short"
    t0 = time.perf_counter()
    try:
        check_prompt(text, 8)
    except ValueError as refused:
        assert len(str(refused)) < 400 and "9" in text
    assert time.perf_counter() - t0 < 0.5


# --- persona specs ------------------------------------------------------------------------------------

FIELD_VALUES = st.one_of(JSON, ANYTHING, st.sampled_from(COLOR_NAMES + ("none", "approach", "avoid", "follow",
                                                                          "focused", "casual", "erratic")),
                         st.floats(0, 1), st.lists(st.floats(0, 1), min_size=5, max_size=5),
                         st.builds(lambda p: list(np.random.default_rng(p).dirichlet(np.ones(5))), st.integers(0, 99)))
FIELDS = ("likes", "social", "style", "follow", "probs", "alpha", "target", "fidelity", "own", "noise", "colour")
PERSONA_JSON = st.one_of(
    JSON,
    st.builds(lambda kind, rest: {"kind": kind, **rest}, st.one_of(st.sampled_from(PERSONA_KINDS), ANYTHING),
              st.dictionaries(st.sampled_from(FIELDS), FIELD_VALUES, max_size=4)),
    st.builds(lambda rest, own: {"kind": "imitator", **rest, "own": own},
              st.fixed_dictionaries({"target": st.integers(-1, 9), "fidelity": st.floats(-0.5, 1.5)}),
              st.one_of(JSON, st.fixed_dictionaries({"kind": st.just("trait")},
                                                    optional={f: FIELD_VALUES for f in ("likes", "social", "style")}))),
)


@fuzz(500)
@given(data=PERSONA_JSON)
def test_persona_from_json_works_or_raises_value_error(data):
    try:
        spec = persona_from_json(data)
    except ValueError:
        return
    assert isinstance(spec, (Trait, Species, Imitator, Mirror, Believer, Memoryless))
    again = persona_from_json(json.loads(json.dumps(spec.to_json())))  # the spec survives a JSON round trip
    assert again == spec
    assert isinstance(spec.describe(), str)
    for name in ("target", "follow"):
        value = getattr(spec, name, None)
        assert value is None or good_int(value, 0, float("inf")), (name, value)
    for name in ("fidelity", "noise"):
        if hasattr(spec, name):
            assert not isinstance(getattr(spec, name), bool) and 0 <= getattr(spec, name) <= 1
    if isinstance(spec, Species):
        assert np.isfinite(spec.alpha) and spec.alpha > 0 and abs(sum(spec.probs) - 1) < 1e-6


# --- the command line ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, tiny_dataset, tiny_run) -> dict:
    """Copies of the shared tiny dataset and tiny trained run (tests/conftest.py) for the commands
    that read them: examples may write into this folder, never into the shared ones."""
    import shutil

    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(tiny_dataset, root / "data")
    shutil.copytree(tiny_run, root / "run")
    (root / "file.txt").write_text("not a folder")
    return {"root": root, "data": str(root / "data"), "run": str(root / "run")}


USAGE_ERROR = re.compile(r"^mirrorhall( [\w-]+)?: error: ")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) in process: exit 0, or exit 2 with one error line; never a traceback or a hang."""
    capsys.readouterr()
    t0 = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: usage errors (2), --help and --version (0)
        code = stop.code
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert elapsed < 60, f"mirrorhall {argv} took {elapsed:.0f} s"
    assert "Traceback" not in err, err
    assert code in (0, 2), (argv, code, err[-2000:])
    event(f"exit {code}")
    if os.environ.get("FUZZ_DEBUG"):
        event(err.strip().splitlines()[-1][:60] if err.strip() else "-")
    if code == 0 and "--no-progress" in argv:  # no noise; mirrorhall's own warnings are one line each
        assert all(ln.startswith("mirrorhall: warning: ") for ln in err.splitlines()), (argv, err[-2000:])
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("mirrorhall: warning: ")]
        errors = [ln for ln in lines if USAGE_ERROR.match(ln)]
        assert len(errors) == 1 and errors[0] == lines[-1], (argv, lines)
        if lines[0].startswith("usage:"):  # argparse: usage lines, then the one error line
            assert all(not ln.startswith("mirrorhall: error:") for ln in lines[:-1])
        elif "--no-progress" in argv:
            assert lines == errors, (argv, lines)  # main(): exactly one line
    return code, out, err


def flag(name, values):
    """An optional (--name value) pair, the value from ``values``."""
    return st.one_of(st.just([]), st.builds(lambda v: [name, v], values))


def numbers(*good, huge: bool = True):
    """Good values, and values that argparse or the config must refuse; ``huge`` adds 10**20 - 1
    (only where it is refused or costs nothing: never for counts of steps, episodes or prompts)."""
    bad = ["0", "-1", "1e3", "abc", "", " 3", "\u0663", "3.5", "0x10", "nan", "-0"]
    bad += ["99999999999999999999"] * huge
    return often(st.sampled_from([str(g) for g in good]), st.sampled_from(bad))


def often(good, bad, weight: int = 6):
    """``good`` about ``weight`` times as often as ``bad``: most examples get far enough to run."""
    return st.sampled_from([True] * weight + [False]).flatmap(lambda g: good if g else bad)


POPULATION = often(st.sampled_from(["crowd", "traits", "followers", "species", "lab"]),
                   st.one_of(st.sampled_from(["", "mob", "CROWD", "crowd\x00", "../crowd"]), st.text(max_size=6)))


def concat(*parts):
    return st.builds(lambda *p: [x for part in p for x in part], *parts)


RUN_ARGS = concat(
    st.just(["run", "--no-progress"]), flag("--population", POPULATION), flag("--agents", numbers(1, 2, 5, 12, 300)),
    flag("--steps", numbers(1, 3)), flag("--seed", numbers(0, 7, 2**40)), flag("--view-radius", numbers(1, 2, 64, 65)),
    flag("--width", numbers(3, 5, 13, 64, 65)), flag("--height", numbers(3, 4, 11, 70)), flag("--colors", numbers(1, 3, 8, 9)),
    st.just(["--steps", "2"]),  # the last value wins: keep every scene short
)


@fuzz(100)
@given(argv=RUN_ARGS, render=st.sampled_from([None, "a.gif", "a.GIF", "a.mp4", "sub/dir/a.gif", "x" * 300 + ".gif",
                                              "file.txt/a.gif", "\x00.gif"]))
def test_cli_run(argv, render, capsys, cli_files):
    if render is not None:
        argv = [*argv, "--render", str(cli_files["root"] / render)]
    code, out, _ = run_cli(argv, capsys)
    if code == 0:
        assert sum(line.startswith("agent_") for line in out.splitlines()) >= 1


GEN_ARGS = concat(
    st.just(["generate", "--no-progress"]), flag("--population", POPULATION),
    st.builds(lambda v: ["--episodes", v], numbers(1, 2, 3, huge=False)), flag("--seed", numbers(0, 5)),
    flag("--agents", numbers(1, 2, 3, 300)), st.builds(lambda v: ["--steps", v], numbers(1, 3, huge=False)),
    flag("--view-radius", numbers(1, 3)), flag("--episodes-per-shard", numbers(1, 2)),
    flag("--prompts-per-step", numbers(1, 2, huge=False)), st.just(["--workers", "0"]),
)


@fuzz(40)
@given(argv=GEN_ARGS, out=often(st.just("new"), st.sampled_from(["file.txt", "data", "run", "", "x" * 300, "a\x00b"]),
                                weight=3))
def test_cli_generate(argv, out, capsys, cli_files, tmp_path_factory):
    target = tmp_path_factory.mktemp("gen") / "ds" if out == "new" else cli_files["root"] / out
    code, out_text, _ = run_cli([*argv, "--out", str(target)], capsys)
    if code == 0:
        assert json.loads((target / "manifest.json").read_text())["complete"]


TRAIN_ARGS = concat(
    st.just(["train", "--no-progress", "--threads", "1"]), flag("--size", st.sampled_from(["tiny", "small", "huge", ""])),
    flag("--lr", st.sampled_from(["0.001", "0", "1", "-1", "nan", "inf", "abc", "1e-300"])),
    flag("--seed", numbers(0, 1)), flag("--eval-every", numbers(1, 2)), flag("--checkpoint-every", numbers(1, 2)),
    flag("--episodes-per-batch", numbers(1, 2, huge=False)), flag("--samples-per-episode", numbers(1, 16, huge=False)),
    flag("--threads", numbers(1)), st.sampled_from([[], [], [], ["--resume"]]),
    st.builds(lambda v: ["--steps", v], numbers(1, 2, huge=False)), st.just(["--size", "tiny"]),
)


@fuzz(30)
@given(argv=TRAIN_ARGS, data=often(st.just("data"), st.sampled_from(["run", "file.txt", "missing", ""]), weight=3),
       out=often(st.just("new"), st.sampled_from(["run", "file.txt"]), weight=3))
def test_cli_train(argv, data, out, capsys, cli_files, tmp_path_factory):
    root = cli_files["root"]
    target = tmp_path_factory.mktemp("train") / "run" if out == "new" else root / out
    if out == "run" and "--resume" in argv:
        target = tmp_path_factory.mktemp("train") / "run"  # keep the shared run as it is
        import shutil

        shutil.copytree(root / "run", target)
    code, stdout, _ = run_cli([*argv, "--data", str(root / data), "--out", str(target)], capsys)
    if code == 0:
        assert re.search(r": step \d+", stdout)


SHORT_TEXT = st.one_of(st.text(min_size=1, max_size=40),
                       st.text(alphabet=string.ascii_letters + string.digits + " _.!" + ODD, min_size=1, max_size=40))
ASSIGN = often(
    st.builds(lambda i, text: f"agent_{i}={text}", st.integers(0, 9),
              st.one_of(SHORT_TEXT, TEMPLATE_TEXT, st.builds(lambda a, b: a + b, TEMPLATE_TEXT, SHORT_TEXT))),
    SHORT_TEXT,
)
ACT_ARGS = concat(
    st.just(["act", "--no-progress", "--steps", "2"]), flag("--population", POPULATION),
    flag("--agents", numbers(1, 3, 8, 65)), flag("--seed", numbers(0, 3)), flag("--view-radius", numbers(1, 2)),
    often(st.lists(st.builds(lambda a: ["--prompt", a], ASSIGN), min_size=1, max_size=3), st.just([]))
    .map(lambda x: sum(x, [])),
    st.lists(st.builds(lambda s, a: ["--switch", f"{s}:{a}"],
                       often(st.sampled_from(["1", "0"]), st.sampled_from(["x", "", "-1", "99999999999"])),
                       ASSIGN), max_size=2).map(lambda x: sum(x, [])),
    st.just(["--steps", "2"]),
)


@fuzz(60)
@given(argv=ACT_ARGS, checkpoint=st.sampled_from(["run", "run", "run", "data", "missing", "file.txt"]))
def test_cli_act(argv, checkpoint, capsys, cli_files):
    run_cli([*argv, "--checkpoint", str(cli_files["root"] / checkpoint)], capsys)


FUZZED_COMMANDS = ("run", "generate", "train", "act", "export")
OTHER_COMMANDS = set(next(a for a in build_parser()._actions if a.dest == "command").choices) - set(FUZZED_COMMANDS)
TOKENS = st.one_of(
    st.sampled_from(["run", "generate", "train", "act", "export", "--agents", "--steps", "--seed", "--population",
                     "--out", "--data", "--checkpoint", "--prompt", "--switch", "--size", "--resume",
                     "--no-progress", "--view-radius", "--bogus", "-h", "--version", "3", "0", "-1", "crowd",
                     "agent_0=behave as yourself", "=", "--", "-", "--agents=2", "--steps=x"]),
    st.text(max_size=6),
)


@fuzz(120)
@given(argv=often(st.builds(lambda cmd, rest: [cmd, *rest], st.sampled_from(["run", "generate", "train", "act", "export"]),
                            st.lists(TOKENS, max_size=6)),
                  st.lists(TOKENS, max_size=7), weight=3))
def test_cli_arbitrary_arguments(argv, capsys, cli_files, tmp_path_factory):
    """Any token list: a usage error or a (small) run; subcommands that would run long are capped by
    the trailing options, which argparse lets win."""
    if any(t in OTHER_COMMANDS or t.startswith(("--ra", "--w")) for t in argv):
        return  # never the long demo, probes or experiments (fuzzed elsewhere), never Ray
    if not argv or argv[0] not in ("run", "generate", "train", "act", "export"):
        run_cli(argv, capsys)
        return
    tail = {"run": ["--steps", "2", "--agents", "3"],
            "generate": ["--episodes", "1", "--steps", "2", "--agents", "2", "--workers", "0",
                         "--out", str(tmp_path_factory.mktemp("g") / "d")],
            "train": ["--steps", "1", "--size", "tiny", "--data", cli_files["data"], "--threads", "1",
                      "--out", str(tmp_path_factory.mktemp("t") / "r")],
            "act": ["--steps", "2", "--agents", "3", "--checkpoint", cli_files["run"]],
            "export": ["--out", str(tmp_path_factory.mktemp("e") / "x")]}[argv[0]]
    run_cli([*argv, *tail], capsys)


@fuzz(20)
@given(checkpoint=often(st.just("run"), st.sampled_from(["data", "missing", "file.txt", "run/checkpoints"]), weight=2),
       out=often(st.just("new"), st.sampled_from(["run", "file.txt", "x" * 300]), weight=2))
def test_cli_export(checkpoint, out, capsys, cli_files, tmp_path_factory):
    root = cli_files["root"]
    target = tmp_path_factory.mktemp("export") / "x" if out == "new" else root / out
    code, _, _ = run_cli(["export", "--checkpoint", str(root / checkpoint), "--out", str(target)], capsys)
    if code == 0:
        assert (target / "checkpoint.json").is_file() and not (target / "optimizer.safetensors").exists()


# --- well-formed files with hostile values ------------------------------------------------------------
# A file that parses (and matches its checksum) with one value replaced by anything JSON or the column
# type can hold: every command that reads it works or refuses it in one line naming the file.

HOSTILE = st.one_of(
    JSON, st.integers(-2**70, 2**70),
    st.sampled_from([10**400, -1, 0, 1, 2**31, 1e308, -0.0, "0.5", "", "x", [], {}, None, True, False,
                     float("nan"), float("inf"), [None], {"mean": "1"}, [1, 2, 3], "../../etc/passwd"]),
)
"""JSON values, NaN and infinities included, and the near misses of a number (its text, a bool)."""
DELETE = object()


def replace_somewhere(node, draw, depth: int = 0):
    """``node`` with one value somewhere inside it (or ``node`` itself) replaced by a HOSTILE value,
    or a key deleted; which one is drawn."""
    kids = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
    if kids and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(kids))
        new = replace_somewhere(node[key], draw, depth + 1)
        node = dict(node) if isinstance(node, dict) else list(node)
        if new is DELETE:
            del node[key]
        else:
            node[key] = new
        return node
    if depth and draw(st.integers(0, 9)) == 0:
        return DELETE
    return draw(HOSTILE)


def named_once(err: str, *paths) -> None:
    """An exit-2 line names one of ``paths`` (the file that was refused)."""
    line = err.strip().splitlines()[-1]
    assert any(str(p) in line for p in paths), (line, paths)


@fuzz(40)
@given(data=st.data())
def test_checkpoint_json_with_hostile_values(data, capsys, cli_files, tmp_path_factory):
    import shutil

    run = tmp_path_factory.mktemp("ckpt") / "run"
    shutil.copytree(cli_files["run"], run)
    folder = run / json.loads((run / "latest.json").read_text())["checkpoint"]
    meta = json.loads((folder / "checkpoint.json").read_text())
    (folder / "checkpoint.json").write_text(json.dumps(replace_somewhere(meta, data.draw)))
    code, _, err = run_cli(["act", "--checkpoint", str(run), "--agents", "3", "--steps", "2", "--no-progress",
                            "--prompt", "agent_0=behave as agent 1"], capsys)
    if code == 2:  # or the scene does not fit a (valid) checkpoint of another size
        named_once(err, folder, "the checkpoint reads at most")
    code, _, err = run_cli(["train", "--data", cli_files["data"], "--out", str(run), "--resume", "--size", "tiny",
                            "--steps", "3", "--threads", "1", "--no-progress"], capsys)
    if code == 2:
        named_once(err, folder, "--resume")


SHARD_LIST_COLUMNS = {"agent_pos": 8, "gem_pos": 8, "actions": 8, "valued": 8, "s_agent": 16, "s_t": 16,
                      "s_kind": 8, "s_target": 16, "s_template": 8, "s_label": 0}
"""List columns of a shard and the bits of their integers (0: float32)."""


@pytest.mark.parametrize("column", sorted(SHARD_LIST_COLUMNS))
@fuzz(4)
@given(data=st.data())
def test_shard_with_hostile_values(column, data, capsys, cli_files, tmp_path_factory):
    import hashlib
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("shard")
    shutil.copytree(cli_files["data"], root / "data")
    path = root / "data" / "shard-00000.parquet"
    table = pq.read_table(path)
    col = table.column(column)
    rows = col.to_pylist()
    episode = data.draw(st.integers(0, len(rows) - 1))
    bits = SHARD_LIST_COLUMNS[column]
    value = data.draw(st.floats(width=32) if bits == 0 else st.integers(-2**(bits - 1), 2**(bits - 1) - 1))
    for i in data.draw(st.lists(st.integers(0, len(rows[episode]) - 1), min_size=1, max_size=5)):
        rows[episode][i] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(rows, type=col.type))
    pq.write_table(table, path)
    raw = path.read_bytes()
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    manifest["shards"][path.name].update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
    (root / "data" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--size", "tiny",
                            "--steps", "2", "--threads", "1", "--eval-every", "2", "--no-progress"], capsys)
    if code == 2:
        named_once(err, path)
        assert not (root / "run").exists(), "a refused train leaves no run folder"


@fuzz(30)
@given(data=st.data())
def test_manifest_with_hostile_values(data, capsys, cli_files, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("manifest")
    shutil.copytree(cli_files["data"], root / "data")
    path = root / "data" / "manifest.json"
    before = json.loads(path.read_text())
    path.write_text(json.dumps(replace_somewhere(before, data.draw)))
    code, _, err = run_cli(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--size", "tiny",
                            "--steps", "2", "--threads", "1", "--eval-every", "2", "--no-progress"], capsys)
    if code == 2:
        named_once(err, root / "data")
        assert not (root / "run").exists(), "a refused train leaves no run folder"


PROBE_RESULTS = ("calibration", "describe", "imitate", "second_order", "mirror_test", "outcome")


@fuzz(120)
@given(name=st.sampled_from(PROBE_RESULTS), data=st.data())
def test_probe_result_with_hostile_values(name, data, capsys, tmp_path_factory):
    from pathlib import Path

    result = json.loads((Path(__file__).parents[1] / "docs" / "results" / f"{name}.json").read_text())
    folder = tmp_path_factory.mktemp("report")
    (folder / f"{name}.json").write_text(json.dumps(replace_somewhere(result, data.draw)))
    code, _, err = run_cli(["report", str(folder)], capsys)
    if code == 2:
        named_once(err, folder / f"{name}.json")
        assert not (folder / "report.md").exists()


def test_fuzz_never_started_ray():
    """No fuzz example may start Ray (the token lists leave out --ray and --ray-address)."""
    import sys

    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()
