"""``mirrorhall probe`` and ``mirrorhall report``: probes of a checkpoint and their markdown report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mirrorhall.commands.common import (
    check_output_file,
    check_output_folder,
    check_path,
    save_config,
    set_threads,
)
from mirrorhall.commands.options import option
from mirrorhall.commands.run import population_names
from mirrorhall.errors import ConfigError, user_input

SCALE_NAMES = ("tiny", "small", "full")


def probe_names() -> tuple[str, ...]:
    from mirrorhall.analysis.report import PROBES

    return (*PROBES, "all")


def target_names() -> tuple[str, ...]:
    from mirrorhall.analysis.imitate import TARGETS

    return TARGETS


@dataclass(frozen=True)
class ProbeConfig:
    """``mirrorhall probe``: which probe, on which checkpoint, at which scale."""

    name: str = option(positional=True, choices=probe_names)
    """The probe to run, or all of them."""
    checkpoint: str = option()
    """Checkpoint or training run folder."""
    out: str = option()
    """Folder for NAME.json and NAME.png (and probe_config.json, this config)."""
    seed: int = 0
    """Seed of the held-out scenes."""
    seeds: int = 1
    """language: run the seeds --seed .. --seed + SEEDS - 1 and pool them into one language.json
    (each seed's summary kept in its per_seed list)."""
    episodes: int | None = None
    """Scenes per probe (None: by --scale)."""
    scale: str = option("small", choices=SCALE_NAMES)
    """Number of scenes per probe: tiny for a quick look (seconds), small for CI and the demo, full
    for docs/results.md."""
    prompt: tuple[str, ...] = option((), metavar="TEMPLATE")
    """A wording of your own, repeatable, run on the same scenes as the canonical template
    (imitate, self, second_order, describe, outcome): {k} is the target's id (imitate,
    second_order; self: the seat's own), {desc} the persona (describe), {n} {what} {horizon} the
    outcome (outcome); results in NAME.json's prompts list."""
    population: str | None = option(None, choices=population_names)
    """Population of the scenes (None: the checkpoint's training population)."""
    targets: str = option("traits", choices=target_names)
    """imitate and describe: traits (the default) or one persona family. imitate: what pi_test is
    drawn from, the population's trait personas or that family; describe: the trait conditions and
    every family of the population, or that family's personas only."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    progress: bool = True
    """Show a progress bar per probe on stderr."""

    def __post_init__(self):
        from mirrorhall.agents.populations import get_population

        names = probe_names()
        if self.name not in names:
            raise ConfigError(f"unknown probe {self.name!r}; allowed: {', '.join(names)}")
        if self.targets not in target_names():
            raise ConfigError(f"--targets must be one of {', '.join(target_names())}; got {self.targets!r}")
        if self.targets != "traits" and self.name not in ("imitate", "describe"):
            raise ConfigError(f"--targets {self.targets} applies to the imitate and describe probes only; run "
                              f"mirrorhall probe imitate --targets {self.targets}, or leave --targets out")
        if self.targets != "traits" and self.name == "describe" and self.prompt:
            raise ConfigError(f"--prompt runs on describe's seen trait combinations, which --targets {self.targets} "
                              "leaves out; leave out one of them")
        if self.scale not in SCALE_NAMES:
            raise ConfigError(f"--scale must be one of {', '.join(SCALE_NAMES)}; got {self.scale!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"--seeds must be a positive integer, got {self.seeds!r}")
        if self.seeds > 1 and self.name != "language":
            raise ConfigError(f"--seeds pools the language probe's seeds; run mirrorhall probe language --seeds "
                              f"{self.seeds}, or leave --seeds out for {self.name}")
        if self.episodes is not None and self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}; leave it out to use the "
                              f"--scale default")
        check_path("--checkpoint", self.checkpoint)
        check_path("--out", self.out)
        if self.prompt:
            from mirrorhall.analysis.report import PROBES, PROMPTED

            if self.name not in PROMPTED:
                raise ConfigError(f"--prompt works with one probe at a time, one of {', '.join(PROMPTED)}; "
                                  f"got {self.name}")
            PROBES[self.name].WORDINGS.check(self.prompt)
        if self.population is not None:
            with user_input():
                get_population(self.population)


def probe_outputs() -> tuple[str, ...]:
    """What ``probe`` and ``report`` write in a probe results folder."""
    from mirrorhall.analysis.report import PROBES

    return ("probe_config.json", "report.md", *(f"{n}.{ext}" for n in PROBES for ext in ("json", "png")))


def probe(cfg: ProbeConfig) -> int:
    from mirrorhall.files import undo_on_failure

    out = check_output_folder("--out", cfg.out, probe_outputs())
    with undo_on_failure(out):
        return _probe(cfg)


def _probe(cfg: ProbeConfig) -> int:
    set_threads(cfg.threads)

    from mirrorhall.agents.populations import get_population
    from mirrorhall.analysis.common import ModelProbe
    from mirrorhall.analysis.report import PROBES, run_probe

    names = list(PROBES) if cfg.name == "all" else [cfg.name]
    model = ModelProbe(cfg.checkpoint)
    population = cfg.population or model.meta.get("dataset", {}).get("population") or "lab"
    with user_input():
        get_population(population)
    save_config(cfg, cfg.out, "probe_config.json")
    from mirrorhall.commands.console import bar

    for name in names:
        model.new_bar = lambda total, name=name: bar(total, name, "part", enabled=cfg.progress)
        r = run_probe(name, model, cfg.out, population, seed=cfg.seed, episodes=cfg.episodes, scale=cfg.scale,
                      prompts=cfg.prompt, targets=cfg.targets, seeds=cfg.seeds)
        if model.bar is not None:
            model.bar.close()
        model.bar = None
        shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in r.get("summary", {}).items() if not isinstance(v, list))
        print(f"{name}: {shown} ({r['seconds']} s) -> {cfg.out}/{name}.json")
        for entry in r.get("prompts", [])[1:] if cfg.prompt else []:
            print(f"  {entry['prompt']!r}: {_headline(entry)}")
    return 0


def _headline(entry: dict) -> str:
    """One wording's figure in words (``NAME.json``'s ``prompts`` entry)."""
    from mirrorhall.analysis.reporting import fmt_ci

    if "fraction" in entry:
        return ", ".join(f"K={k} {fmt_ci(v)}" for k, v in entry["fraction"].items() if int(k) in (5, 10, 20))
    return ", ".join(f"{k} {fmt_ci(v)}" for k, v in entry.items() if isinstance(v, dict))


@dataclass(frozen=True)
class ReportConfig:
    """``mirrorhall report``: the folder of probe results to turn into report.md."""

    dir: str = option(positional=True)
    """Folder of probe results (mirrorhall probe --out DIR)."""

    def __post_init__(self):
        check_path("DIR", self.dir)


def report(cfg: ReportConfig) -> int:
    from mirrorhall.analysis.report import PROBES, write_report

    folder = Path(cfg.dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of probe results; run mirrorhall probe all --out {folder} first")
    found = [folder / f"{name}.json" for name in PROBES if (folder / f"{name}.json").exists()]
    if not found:
        raise ConfigError(f"{folder} holds no probe results (*.json); run mirrorhall probe all --out {folder}")
    check_output_file("DIR", str(folder / "report.md"))
    for path in found:
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{path} is not valid JSON; re-run mirrorhall probe {path.stem} --out {folder}") from None
    print(f"report: {write_report(folder)}")
    return 0
