"""``mirrorhall compare-direct``: PPO on log pi_test(a|s) against the model watching pi_test.

The full measurement (docs/results.md) is ``--personas 4 --seeds 3 --budget 1000000 --batch 4096
--worlds 64``; the defaults are a small run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirrorhall.commands.common import check_output_folder, check_path, save_config, set_threads
from mirrorhall.commands.options import option
from mirrorhall.commands.run import population_names
from mirrorhall.errors import ConfigError, user_input


@dataclass(frozen=True)
class CompareDirectConfig:
    """``mirrorhall compare-direct``: how many personas, how much PPO, how many held-out scenes."""

    checkpoint: str = option(metavar="PATH")
    """Checkpoint or training run folder."""
    out: str = option(metavar="DIR")
    """Output folder (compare_direct.json, .png, .md, compare_direct_config.json, and
    compare_direct.log holding what Ray and RLlib logged)."""
    seed: int = 0
    """Seed of the personas, the scenes and PPO."""
    personas: int = 4
    """Trait personas pi_test."""
    iterations: int = 10
    """PPO iterations per run, when no --budget is given (budget = iterations x batch)."""
    batch: int = 1000
    """Env steps sampled per PPO iteration."""
    learner: tuple[str, ...] = option(("flat", "relational"), choices=("flat", "relational", "rllib"))
    """PPO learners (repeat the option): flat (an MLP over the flat observation), relational (the
    model's per-action features and head form), rllib (RLlib's PPO with the flat MLP; starts Ray)."""
    seeds: int = 1
    """PPO runs per learner and persona (seeds 0..S-1)."""
    budget: int | None = None
    """Env steps per PPO run (None: --iterations x --batch)."""
    tolerance: float = 0.02
    """A run stops once its KL to pi_test (CE minus pi_test's entropy, held-out set) is at most this (nats)."""
    worlds: int = 8
    """Worlds stepped together by the flat and relational learners."""
    resume: bool = False
    """Read back finished runs of DIR/runs whose settings match instead of training them again."""
    episodes: int = 8
    """Held-out scenes per persona."""
    population: str | None = option(None, choices=population_names)
    """Population of the scenes (None: the checkpoint's training population)."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    progress: bool = True
    """Show a progress bar on stderr (one tick per persona's model scenes and per PPO iteration)."""

    def __post_init__(self):
        from mirrorhall.agents.populations import get_population

        if self.personas < 1 or self.episodes < 1 or self.batch < 1 or self.seeds < 1 or self.worlds < 1:
            raise ConfigError("--personas, --episodes, --batch, --seeds and --worlds must be >= 1")
        if not self.learner or len(set(self.learner)) != len(self.learner) \
                or any(x not in ("flat", "relational", "rllib") for x in self.learner):
            raise ConfigError(f"--learner: give each of flat, relational, rllib at most once; got {list(self.learner)}")
        if not self.tolerance >= 0:
            raise ConfigError(f"--tolerance must be >= 0 nats, got {self.tolerance}")
        check_path("--checkpoint", self.checkpoint)
        check_path("--out", self.out)
        if self.population is not None:
            with user_input():
                get_population(self.population)


OUTPUTS = ("compare_direct.json", "compare_direct.png", "compare_direct.md", "compare_direct_config.json",
           "compare_direct.log", "runs")


def compare_direct(cfg: CompareDirectConfig) -> int:
    from mirrorhall.files import undo_on_failure

    out = check_output_folder("--out", cfg.out, OUTPUTS)
    set_threads(cfg.threads)

    if "rllib" in cfg.learner:
        import ray.rllib  # noqa: F401 - RLlib adds its stderr log handler on import: before library_log

    from mirrorhall.analysis.compare_direct import progress_total, run
    from mirrorhall.commands.console import bar, library_log

    budget = cfg.iterations * cfg.batch if cfg.budget is None else cfg.budget
    runs = Path(cfg.out) / "runs"
    with undo_on_failure(out, keep=lambda entry: entry == runs):  # finished runs stay for --resume
        with library_log(Path(cfg.out) / "compare_direct.log"):  # RLlib's warnings are no news to the user
            total = progress_total(cfg.personas, cfg.seeds, cfg.learner, budget, cfg.batch, cfg.worlds)
            ticks = bar(total, "compare-direct", "part", enabled=cfg.progress)
            r = run(cfg.checkpoint, cfg.out, seed=cfg.seed, personas=cfg.personas, iterations=cfg.iterations,
                    episodes=cfg.episodes, population=cfg.population, train_batch_size=cfg.batch,
                    learners=cfg.learner, seeds=cfg.seeds, budget=budget, worlds=cfg.worlds,
                    tolerance=cfg.tolerance, resume=cfg.resume, progress=lambda n=1: ticks.update(n))
            ticks.close()
        save_config(cfg, cfg.out, "compare_direct_config.json")
    s = r["summary"]
    k = max(r["ks"])
    ppo = "; ".join(f"{x} PPO CE after {s[f'{x}_env_steps_final']} env steps: {s[f'{x}_ce_final']:.3f} "
                    f"(untrained {s[f'{x}_ce_untrained']:.3f})" for x in r["learners"])
    print(f"compare-direct: model CE at K={k}: {s[f'model_ce_at_K{k}']:.3f}; {ppo}; "
          f"floor {s['entropy_floor']:.3f} ({r['seconds']} s) -> {cfg.out}/compare_direct.md")
    return 0
