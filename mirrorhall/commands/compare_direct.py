"""``mirrorhall compare-direct``: PPO on log pi_test(a|s) against the model watching pi_test."""

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
    """PPO iterations per persona."""
    batch: int = 1000
    """Env steps sampled per PPO iteration."""
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

        if self.personas < 1 or self.episodes < 1 or self.batch < 1:
            raise ConfigError("--personas, --episodes and --batch must be >= 1")
        check_path("--checkpoint", self.checkpoint)
        check_path("--out", self.out)
        if self.population is not None:
            with user_input():
                get_population(self.population)


OUTPUTS = ("compare_direct.json", "compare_direct.png", "compare_direct.md", "compare_direct_config.json",
           "compare_direct.log")


def compare_direct(cfg: CompareDirectConfig) -> int:
    from mirrorhall.files import undo_on_failure

    out = check_output_folder("--out", cfg.out, OUTPUTS)
    set_threads(cfg.threads)

    import ray.rllib  # noqa: F401 - RLlib adds its stderr log handler on import: before library_log

    from mirrorhall.analysis.compare_direct import run
    from mirrorhall.commands.console import bar, library_log

    with undo_on_failure(out):
        with library_log(Path(cfg.out) / "compare_direct.log"):  # RLlib's warnings are no news to the user
            ticks = bar(cfg.personas * (cfg.iterations + 1), "compare-direct", "part", enabled=cfg.progress)
            r = run(cfg.checkpoint, cfg.out, seed=cfg.seed, personas=cfg.personas, iterations=cfg.iterations,
                    episodes=cfg.episodes, population=cfg.population, train_batch_size=cfg.batch,
                    progress=lambda: ticks.update(1))
            ticks.close()
        save_config(cfg, cfg.out, "compare_direct_config.json")
    s = r["summary"]
    k = max(r["ks"])
    print(f"compare-direct: model CE at K={k}: {s[f'model_ce_at_K{k}']:.3f}; PPO CE after "
          f"{s['ppo_env_steps_final']} env steps: {s['ppo_ce_final']:.3f} (untrained {s['ppo_ce_untrained']:.3f}); "
          f"floor {s['entropy_floor']:.3f} ({r['seconds']} s) -> {cfg.out}/compare_direct.md")
    return 0
