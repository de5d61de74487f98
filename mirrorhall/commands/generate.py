"""``mirrorhall generate``: a hindsight-labelled dataset (Parquet shards and a manifest).

The dataset's own config is ``GenerateConfig``; this command adds where to write it and how to
spread the work. The manifest records the ``GenerateConfig`` (the bytes depend on nothing else).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mirrorhall.commands.common import check_output_folder, check_path
from mirrorhall.commands.options import Opt, option
from mirrorhall.commands.run import population_names
from mirrorhall.errors import ConfigError
from mirrorhall.imitation.generate import GenerateConfig

# Settings of GenerateConfig's fields on the command line (help where the field has no docstring).
OPTIONS = {
    "population": Opt(choices=population_names),
    "agents": Opt(help="Number of agents in every scene."),
    "width": Opt(help="Grid width in cells, outer walls included."),
    "height": Opt(help="Grid height in cells, outer walls included."),
    "colors": Opt(help="Number of gem colours."),
    "view_radius": Opt(help="Partial observability radius (None: full view)."),
    "kind_weights": Opt(metavar="W"),
}


@dataclass(frozen=True)
class GenerateCommand:
    """``mirrorhall generate``: the dataset's config, where it goes, and who computes it."""

    config: GenerateConfig
    """What to generate (its fields are this command's options)."""
    out: str = option(metavar="DIR")
    """Dataset folder (created; a re-run resumes it)."""
    workers: int = 0
    """Fan shards out as Ray tasks on a local loopback Ray instance with this many CPUs (0: no Ray)."""
    ray_address: str | None = option(None, metavar="ADDR")
    """Run the Ray tasks on the cluster at this address instead."""
    processes: int = 1
    """Local processes without Ray (the same bytes for any count)."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self):
        check_path("--out", self.out)
        if self.processes < 1:
            raise ConfigError(f"--processes must be >= 1 (1: this process only), got {self.processes}")
        if self.processes > 1 and (self.workers or self.ray_address):
            raise ConfigError("--processes runs without Ray; drop --workers/--ray-address, or --processes")


class ShardProgress:
    """A progress bar over shards that also shows the running count of labelled samples."""

    def __init__(self, bar):
        self.bar = bar
        self.samples = 0

    def __call__(self, shards: int, samples: int) -> None:
        self.samples += samples
        self.bar.update(shards)
        self.bar.set_postfix(samples=self.samples)


def generate(cmd: GenerateCommand) -> int:
    from mirrorhall.files import undo_on_failure

    out = check_output_folder("--out", cmd.out, ("manifest.json",))
    # a shard written is kept (a re-run resumes); a dataset folder that got no shard goes
    with undo_on_failure(out, keep=lambda _: any(out.glob("shard-*.parquet"))):
        return _generate(cmd)


def _generate(cmd: GenerateCommand) -> int:
    from tqdm import tqdm

    from mirrorhall.imitation.generate import generate as generate_dataset

    bar = tqdm(total=cmd.config.n_shards, desc="shards", unit="shard", disable=not cmd.progress,
               file=sys.stderr)
    manifest = generate_dataset(cmd.config, cmd.out, workers=cmd.workers, ray_address=cmd.ray_address,
                                progress=ShardProgress(bar), processes=cmd.processes)
    bar.close()
    print(f"{cmd.out}: {len(manifest['shards'])} shards, {manifest['episodes']} episodes, "
          f"{manifest['samples']} labelled samples")
    return 0
