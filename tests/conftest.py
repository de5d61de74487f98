"""Fixtures shared by several test modules, each built once per test run (session scope) and only
when a selected test asks for it.

- ``tiny_dataset``: 4 ``traits`` episodes of 6 steps, 3 agents, in 2 shards (seed 9).
- ``tiny_run``: a tiny model trained 4 steps on ``tiny_dataset`` (1 thread), checkpoints at 2 and 4.
- ``train_dataset``: 16 ``crowd`` episodes of 20 steps, 4 agents, in 4 shards (seed 4): enough
  samples for a few hundred training steps of a tiny model.
- ``reference_checkpoint`` and ``reference_probe``: ``checkpoints/reference`` and a ``ModelProbe``
  of it; tests that ask for them are skipped when the checkpoint is not in this checkout.
- ``one_torch_thread`` (autouse): torch computes on one thread in the test process.

The folders are built through ``mirrorhall.cli.main``, as a user would build them. They are shared:
a test that writes into one (resumes a run, corrupts a shard) copies it first, e.g. with
``shutil.copytree(tiny_run, tmp_path / "run")``.

Markers (registered in pyproject.toml): ``slow`` for tests that take more than about 5 s on a quiet
2-core machine, ``ray`` for tests that start Ray. ``make test`` runs everything; ``make test-fast``
runs ``-m "not slow and not ray"``.

``make test`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``). Every ``ray``
test joins one group, so they run one after another on one worker: two Ray instances never share
this machine, while the other worker takes the rest of the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "checkpoints" / "reference"

TINY_DATASET = ["--population", "traits", "--episodes", "4", "--episodes-per-shard", "2", "--agents", "3",
                "--steps", "6", "--seed", "9"]
TINY_RUN = ["--size", "tiny", "--steps", "4", "--eval-every", "2", "--checkpoint-every", "2", "--threads", "1"]
TRAIN_DATASET = ["--population", "crowd", "--episodes", "16", "--episodes-per-shard", "4", "--agents", "4",
                 "--steps", "20", "--seed", "4"]


def pytest_collection_modifyitems(config, items):
    """Ray tests run one at a time on one worker under ``--dist loadgroup`` (see the module's
    docstring). Without pytest-xdist there are no workers and nothing to group."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """torch computes on one thread in this process, whatever the order of the tests.

    The test run is an entry point, so it sets the count. Before, the first in-process training
    with ``--threads 1`` set it for every later test, so a module's duration depended on what ran
    before it: on a busy 2-core machine torch's default two threads made the probe tests up to
    ~90x slower (test_bayes_oracle_scores_fraction_one_and_prior_oracle_zero: 92 s alone, 1 s
    after a one-thread test). Subprocesses choose their own count (``--threads``).
    """
    import torch

    torch.set_num_threads(1)


def mirrorhall(*argv: str) -> None:
    """``mirrorhall ARGV`` in this process; it must succeed."""
    from mirrorhall.cli import main

    code = main([*argv, "--no-progress"])
    assert code == 0, f"mirrorhall {' '.join(argv)} exited {code}"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_dataset") / "data"
    mirrorhall("generate", *TINY_DATASET, "--out", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    mirrorhall("train", "--data", str(tiny_dataset), "--out", str(run), *TINY_RUN)
    return run


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_dataset") / "data"
    mirrorhall("generate", *TRAIN_DATASET, "--out", str(root))
    return root


@pytest.fixture(scope="session")
def reference_checkpoint() -> Path:
    if not (REFERENCE / "checkpoint.json").exists():
        pytest.skip(f"the reference checkpoint is not built ({REFERENCE / 'checkpoint.json'} is missing)")
    return REFERENCE


@pytest.fixture(scope="session")
def reference_probe(reference_checkpoint):
    """A ``ModelProbe`` of the reference checkpoint. Probes only read it (the model is in eval mode
    and queried under ``torch.no_grad``), so one instance serves every test."""
    from mirrorhall.analysis.common import ModelProbe

    return ModelProbe(reference_checkpoint)
