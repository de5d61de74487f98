"""Training with Ray Train: the same loop body as the local path, inside ``TorchTrainer``.

Each worker runs ``Trainer.train_step`` on a DDP-wrapped model (gloo on CPU), reading its share of
the Parquet shards through Ray Data. Rank 0 evaluates and writes mirrorhall checkpoints
(safetensors + JSON) that Ray Train persists; every rank reports. ``FailureConfig`` restarts the
workers after a failure and the loop resumes from Ray's latest checkpoint. At the end the newest
checkpoint is copied into ``RUN/checkpoints/`` and ``RUN/latest.json``, so a Ray run loads
locally exactly like a local one, and ``--resume`` continues either kind of run.

On a local Ray instance (no ``address``) the workers join their process group on loopback only:
torch's own rendezvous would listen on every interface (``TCPStore`` binds the wildcard address
whatever ``MASTER_ADDR`` says), so rank 0 binds the store's socket to 127.0.0.1 itself and gloo
is pinned to the loopback interface (``loopback_torch_config``). On a cluster, Ray Train's
default rendezvous is kept.

``on_step`` (a ``StepHook``) is called on every worker before each training step; it travels to
the workers inside Ray Train's loop config. Tests pass one that raises once, to prove that a run
survives a worker failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirrorhall.errors import ConfigError, OutputError
from mirrorhall.imitation.train import TrainConfig


@dataclass(frozen=True)
class WorkerStep:
    """Where a Ray Train worker is, just before it runs a training step."""

    step: int
    """The step about to run (the number of steps done)."""
    rank: int
    world_size: int
    restored_from: int | None
    """The step this worker's attempt resumed from; None on a fresh start."""


StepHook = Callable[[WorkerStep], None]


_RENDEZVOUS: dict[str, int] = {}
"""In rank 0's worker process: the file descriptor of the store's loopback socket, between
``_listen_on_loopback`` and ``_join_on_loopback``."""


def _loopback_interface() -> str:
    names = {name for _, name in socket.if_nameindex()}
    return "lo" if "lo" in names or "lo0" not in names else "lo0"


def _listen_on_loopback() -> int:
    """Rank 0: bind the rendezvous store's socket to 127.0.0.1; return its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    _RENDEZVOUS["fd"] = sock.detach()  # the store owns it from here on
    return port


def _join_on_loopback(rank: int, world_size: int, port: int, timeout_s: int) -> None:
    """Every rank: join the gloo process group through the store on 127.0.0.1:``port``."""
    from datetime import timedelta

    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = _loopback_interface()  # gloo's own listeners
    timeout = timedelta(seconds=timeout_s)
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=True, timeout=timeout,
                              wait_for_workers=False, master_listen_fd=_RENDEZVOUS.pop("fd"))
    else:
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timeout)


def loopback_torch_config():
    """A ``TorchConfig`` (gloo) whose workers rendezvous on 127.0.0.1 only (all on this machine).

    The classes are built here, not at import, because importing Ray Train costs seconds; Ray
    pickles them by value into its controller.
    """
    import ray
    from ray.train.torch import TorchConfig
    from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

    class LoopbackTorchBackend(_TorchBackend):
        def on_start(self, worker_group, backend_config):
            port = worker_group.execute_single(0, _listen_on_loopback)
            worker_group.execute(_set_torch_distributed_env_vars)
            n = len(worker_group)
            # positional: execute_single_async's own first parameter is called rank
            ray.get([worker_group.execute_single_async(i, _join_on_loopback, i, n, port, backend_config.timeout_s)
                     for i in range(n)])

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return LoopbackTorchBackend

    return LoopbackTorchConfig(backend="gloo")


def _loop(config: dict) -> None:
    import ray.train
    import torch
    from ray.train import Checkpoint

    from mirrorhall.envs.perception import place_of
    from mirrorhall.imitation.batches import episode_arrays
    from mirrorhall.imitation.checkpoint import load_training_state, read_meta, save_checkpoint
    from mirrorhall.imitation.generate import GenerateConfig
    from mirrorhall.imitation.model import count_parameters
    from mirrorhall.imitation.shards import decode_row
    from mirrorhall.imitation.tokenizer import make_tokenizer
    from mirrorhall.imitation.train import Trainer

    cfg = TrainConfig.from_json(config["train"])
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, cfg.threads or 1))  # this function is the worker process's entry point
    gen = GenerateConfig.from_json(config["generator"])
    world = gen.world()
    tokenizer = make_tokenizer(cfg.tokenizer)
    shard = ray.train.get_dataset_shard("train")
    episodes = [episode_arrays(decode_row(row, world), world, place=cfg.place, perspective=cfg.perspective,
                               pickups=cfg.pickups)
                for row in shard.iter_rows()]
    episodes.sort(key=lambda e: e.episode)  # a worker's order must not depend on read order
    trainer = Trainer(cfg, episodes, tokenizer, world.n_colors, full_view=world.view_radius is None,
                      place=place_of(world, cfg.place),
                      wrap=ray.train.torch.prepare_model, rank=rank)

    ckpt = ray.train.get_checkpoint()
    start_from = config.get("start_from")
    meta = None
    if ckpt is not None:  # after a worker failure, or the storage of an earlier (killed) Ray run
        with ckpt.as_directory() as d:
            # a local run may have continued past Ray's newest checkpoint: the larger step wins
            if not start_from or read_meta(Path(d))["step"] >= read_meta(Path(start_from))["step"]:
                meta = load_training_state(Path(d), trainer.core, trainer.optimizer, trainer.average)
    if meta is None and start_from:
        meta = load_training_state(Path(start_from), trainer.core, trainer.optimizer, trainer.average)
    restored = None
    if meta is not None:
        trainer.step = restored = int(meta["step"])
    on_step: StepHook | None = config.get("on_step")
    extra = {"parameters": count_parameters(trainer.core),
             "ray": {"workers": world_size, "restored_from_step": restored}}

    import time

    t0, seen = time.perf_counter(), 0
    while trainer.step < cfg.steps:
        if on_step is not None:
            on_step(WorkerStep(trainer.step, rank, world_size, restored))
        metrics = trainer.train_step()
        seen += metrics["samples"]
        # every worker trains on its own batch: the run's throughput is world_size times rank 0's
        metrics["samples_per_s"] = world_size * seen / max(time.perf_counter() - t0, 1e-9)
        step = trainer.step
        last = step == cfg.steps
        if step % cfg.eval_every == 0 or last:
            if rank == 0:
                metrics.update(trainer.evaluate())
        if step % cfg.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    save_checkpoint(Path(tmp), trainer.core, tokenizer, run_config=cfg.to_json(), step=step,
                                    dataset=config["dataset"], metrics=metrics, optimizer=trainer.optimizer,
                                    extra={**extra, "data_position": {"step": step}}, average=trainer.average)
                    checkpoint = Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint)
        elif step % cfg.log_every == 0:
            ray.train.report(metrics)


def _divergence(err: Exception):
    """The earliest ``NonFiniteLoss`` among the workers' failures of a failed Ray Train run, or None.

    The gradient norm is all-reduced, so every worker stops at the same step, before the update;
    the user then gets the local loop's one line instead of Ray's failed run."""
    from mirrorhall.imitation.train import NonFiniteLoss

    failures = [f for f in (getattr(err, "worker_failures", None) or {}).values() if isinstance(f, NonFiniteLoss)]
    return min(failures, key=lambda f: f.step) if failures else None


def _publish(out: Path, checkpoint: Path, step: int) -> None:
    """Copy a checkpoint into ``RUN/checkpoints/`` and name it in ``RUN/latest.json``: a Ray run
    then loads locally exactly like a local one."""
    from mirrorhall.files import atomic_write

    folder = out / "checkpoints" / f"step-{step:08d}"
    if folder.resolve() != Path(checkpoint).resolve():
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(checkpoint, folder)
    atomic_write(out / "latest.json", json.dumps({"checkpoint": str(folder.relative_to(out))}).encode())


def train_ray(cfg: TrainConfig, workers: int = 2, address: str | None = None, resume: bool = False,
              cpus_per_worker: float = 0.5, max_failures: int = 1, on_step: StepHook | None = None) -> dict:
    """Train with ``workers`` Ray Train workers; returns the final metrics of rank 0.

    ``on_step`` runs on every worker before each step (pickled into the workers with the loop
    config); an exception it raises fails that worker, as any failure would.
    """
    from mirrorhall.imitation.checkpoint import newest_checkpoint, ray_checkpoints, read_meta
    from mirrorhall.imitation.shards import Dataset
    from mirrorhall.imitation.train import _after_divergence, dataset_id
    from mirrorhall.raykit import ray_session

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer with --ray, got {workers!r}")
    out = Path(cfg.out).resolve()
    data = Dataset(cfg.data)
    data.check_values()  # a hostile shard is one line here, not a failed Ray Train worker
    start_from = None
    if resume:
        # Ray Train itself restores from its storage in RUN/ray (same run name); start_from covers
        # runs whose newest checkpoint is elsewhere (a local run, or a later local resume)
        newest = newest_checkpoint(out) if out.exists() else None
        if newest is None:
            raise ConfigError(f"--resume: {out} holds no checkpoint yet; start the run without --resume")
        start_from = str(newest)
        done = read_meta(newest)
        if done["step"] >= cfg.steps:  # nothing left to run (Ray Train would report no checkpoint)
            _publish(out, newest, done["step"])
            return {**done.get("metrics", {}), "step": done["step"]}
    elif (out / "latest.json").exists() or ray_checkpoints(out):
        raise OutputError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    with ray_session(address=address, num_cpus=None if address else max(2, workers)) as ray:
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        ds = ray.data.read_parquet([str(p.resolve()) for p in data.shard_paths])
        trainer = TorchTrainer(
            _loop,
            train_loop_config={"train": cfg.to_json(), "generator": data.config.to_json(),
                               "dataset": dataset_id(data), "start_from": start_from, "on_step": on_step},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            torch_config=TorchConfig(backend="gloo") if address else loopback_torch_config(),
            datasets={"train": ds},
            run_config=RunConfig(name="ray_train", storage_path=str(out / "ray"),
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        try:
            result = trainer.fit()
        except Exception as err:
            diverged = _divergence(err)
            if diverged is None:
                raise
            newest = newest_checkpoint(out)  # the run's last good checkpoint: local or one Ray kept
            if newest is not None:
                _publish(out, newest, int(read_meta(newest)["step"]))
            raise ConfigError(f"{diverged}; {_after_divergence(out)}") from None
        if result.error:
            raise RuntimeError(f"Ray Train failed: {result.error}")
        with result.checkpoint.as_directory() as d:
            meta = json.loads((Path(d) / "checkpoint.json").read_text())
            _publish(out, Path(d), int(meta["step"]))
        metrics = dict(result.metrics or {})
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"phase": "ray", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}) + "\n")
    return metrics
