"""The diversity experiment (``mirrorhall diversity``) and the composed populations it trains on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mirrorhall.agents.personas import FAMILIES
from mirrorhall.agents.populations import get_population, is_population, lab_with
from mirrorhall.diversity import KS, curve, training_families
from mirrorhall.envs.core import WorldConfig

from .conftest import mirrorhall


def _kinds(scene) -> set[str]:
    return {type(p).__name__.lower() for p in scene}


def test_a_composed_population_is_lab_plus_exactly_the_families_named():
    lab, two = get_population("lab"), get_population("lab+patrol+collector")
    assert two.mix == lab.mix + (("patrol", 0.1), ("collector", 0.1))
    assert two.held_out == lab.held_out and two.families("train") == ("patrol", "collector")
    world = WorldConfig(n_agents=8, n_colors=3)
    rng = np.random.default_rng(0)
    seen = set().union(*(_kinds(two.sample_scene(8, 3, rng, world=world)) for _ in range(200)))
    assert {"patrol", "collector"} <= seen
    assert not seen & {"territorial", "contrarian", "explorer"}
    assert lab_with(()) == "lab" and lab_with(("patrol",)) == "lab+patrol"


@pytest.mark.parametrize("name, message", [("lab+wizard", "unknown family 'wizard'"),
                                           ("lab+patrol+patrol", "names a family twice"),
                                           ("lab+", "unknown family ''"),
                                           ("labs", "unknown population")])
def test_a_bad_composed_population_is_refused_by_name(name, message):
    with pytest.raises(ValueError, match=message):
        get_population(name)
    assert not is_population(name)


@pytest.mark.parametrize("held_out", FAMILIES)
def test_no_point_trains_on_the_held_out_family(held_out):
    fams = training_families(held_out)
    assert held_out not in fams and len(fams) == len(FAMILIES) - 1
    world = WorldConfig(n_agents=8, n_colors=3)
    rng = np.random.default_rng(1)
    for n in range(len(fams) + 1):
        pop = get_population(lab_with(fams[:n]))
        assert held_out not in pop.families("all")
        assert all(held_out not in _kinds(pop.sample_scene(8, 3, rng, world=world)) for _ in range(50))


def _point(n, seed, held, traits, fam):
    figure = {str(k): {"mean": held + k / 100, "ci95": [held - 0.1, held + 0.1]} for k in KS}
    return {"n_families": n, "families": list(FAMILIES[1:1 + n]), "seed": seed, "held_out_fraction": figure,
            "traits_fraction": {"10": {"mean": traits, "ci95": [0, 1]}}, "families_mean_K10": fam}


def test_the_curve_averages_seeds_per_number_of_families():
    rows = curve([_point(0, 1, 0.1, 0.8, None), _point(0, 2, 0.3, 0.9, None), _point(1, 1, 0.5, 0.7, 0.4)])
    assert [r["n_families"] for r in rows] == [0, 1] and rows[0]["seeds"] == [1, 2]
    assert rows[0]["held_out_K10"]["mean"] == pytest.approx(0.3) and rows[0]["traits_K10"] == pytest.approx(0.85)
    assert rows[0]["held_out_K10"]["ci95"] == pytest.approx([0.1, 0.3])
    assert rows[0]["families_mean_K10"] is None and rows[1]["families_mean_K10"] == pytest.approx(0.4)


@pytest.mark.slow
def test_the_experiment_runs_its_points_probes_each_and_resumes(tmp_path, capsys):
    """Two points at the tiny scale: each trained on its own population, probed on the held-out
    family, on the traits and on its own families; the curve holds the probes' own figures; a second
    run trains nothing again."""
    out = tmp_path / "div"
    mirrorhall("diversity", "collector", "--out", str(out), "--scale", "tiny", "--max-families", "1",
               "--threads", "1", "--processes", "1")
    printed = capsys.readouterr().out
    result = json.loads((out / "diversity.json").read_text())
    assert result["held_out"] == "collector" and (out / "diversity.png").stat().st_size > 0
    points = {p["n_families"]: p for p in result["points"]}
    assert sorted(points) == [0, 1]
    assert points[0]["population"] == "lab" and points[1]["population"] == "lab+patrol"
    for n, point in points.items():
        folder = out / f"n{n}-seed1"
        assert not (folder / "data").exists()  # datasets are deleted once trained on
        meta = json.loads((folder / "checkpoint" / "checkpoint.json").read_text())
        assert meta["dataset"]["population"] == point["population"]
        probe = json.loads((folder / "probes" / "collector" / "imitate.json").read_text())
        assert probe["pi_test"] == "collector" and probe["population"] == "lab"
        k10 = next(c for c in probe["conditions"] if c["K"] == 10)["fraction"]
        assert point["held_out_fraction"]["10"] == {"mean": k10["mean"], "ci95": k10["ci95"]}
        assert sorted(point["families_fraction"]) == point["families"]
    assert points[0]["families_mean_K10"] is None
    assert points[1]["families_mean_K10"] == points[1]["families_fraction"]["patrol"]["10"]["mean"]
    row = result["curve"][1]
    assert row["held_out_K20"]["mean"] == points[1]["held_out_fraction"]["20"]["mean"]
    assert f"{row['held_out_K10']['mean']:6.3f}" in printed
    # every point probed from the same scene seeds (layouts and personas; agent 0 is each model)
    probes = [json.loads((out / f"n{n}-seed1/probes/collector/imitate.json").read_text()) for n in (0, 1)]
    assert [(p["seed"], p["episodes"], p["hypotheses"]) for p in probes] == [(1, 7, probes[0]["hypotheses"])] * 2
    stamp = (out / "n1-seed1" / "point.json").stat().st_mtime_ns
    mirrorhall("diversity", "collector", "--out", str(out), "--scale", "tiny", "--max-families", "1",
               "--threads", "1")
    assert (out / "n1-seed1" / "point.json").stat().st_mtime_ns == stamp


def test_the_diversity_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    from mirrorhall.cli import main

    mixed = tmp_path / "mixed" / "n0-seed1"
    mixed.mkdir(parents=True)
    (mixed / "point.json").write_text(json.dumps({"held_out": "patrol", "scale": "tiny"}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("mine")
    for argv, message in ((["wizard", "--out", str(tmp_path / "a")], "unknown family 'wizard'"),
                          (["patrol", "--out", str(tmp_path / "a"), "--scale", "huge"], "--scale"),
                          (["patrol", "--out", str(tmp_path / "a"), "--max-families", "9"], "--max-families"),
                          (["patrol", "--out", str(tmp_path / "a"), "--only", "7"], "--only must be 0 .. 4"),
                          (["patrol", "--out", str(tmp_path / "a"), "--only", "1", "--max-families", "2"],
                           "not both"),
                          (["collector", "--out", str(tmp_path / "mixed"), "--scale", "cpu-place"],
                           "patrol held out at scale tiny"),
                          (["collector", "--out", str(tmp_path / "mixed"), "--scale", "tiny"], "patrol held out"),
                          (["patrol", "--out", str(tmp_path / "other"), "--scale", "tiny"], "not empty")):
        assert main(["diversity", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists() and (tmp_path / "other" / "x").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir()) == ["n0-seed1"]


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("heldout-*"))


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_held_out_checkpoint_never_trained_on_its_family_and_reruns_its_probe(folder, tmp_path):
    """checkpoints/heldout-<family>: under 5 MB, trained on a population that never draws the
    family, and its held-out probe runs from the checkpoint alone (a short run here)."""
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import run_probe
    from mirrorhall.imitation.checkpoint import load_model

    family = folder.name.removeprefix("heldout-")
    assert family in FAMILIES
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5 * 2**20
    _, _, meta = load_model(folder)
    population = get_population(meta["dataset"]["population"])
    assert family not in population.families("train") and family not in dict(population.mix)
    result = run_probe("imitate", ModelProbe(folder), tmp_path, "lab", seed=1, episodes=3, scale="small",
                       targets=family)
    assert result["pi_test"] == family
    by_k = {c["K"]: c for c in result["conditions"]}
    for k in (10, 20):  # the model's and Bayes's cross-entropies exist, and Bayes beats the prior
        assert np.isfinite(by_k[k]["ce_model"]["mean"]) and by_k[k]["ce_bayes"]["mean"] < by_k[k]["ce_prior"]["mean"]


def test_the_shipped_families_checkpoint_was_trained_on_every_family_with_recency_and_place():
    from mirrorhall.imitation.checkpoint import load_model

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "families"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5 * 2**20
    model, _, meta = load_model(folder)
    assert meta["dataset"]["population"] == "lab-families" and meta["weights_dtype"] == "float16"
    assert set(get_population("lab-families").families("train")) == set(FAMILIES)
    assert model.config.recency == (2.0, 8.0) and model.config.place == (11, 11)
