"""Training the multi-policy model by maximum likelihood on soft labels.

One loop body (``Trainer.train_step``) serves both paths: the default local loop in this process,
and Ray Train's ``TorchTrainer`` (``mirrorhall.imitation.train_ray``), where it runs inside DDP.

Run folder::

    RUN/checkpoints/step-NNNNNNNN/   checkpoints (safetensors + JSON), every --checkpoint-every
    RUN/latest.json                  the newest checkpoint, written after it is complete
    RUN/metrics.jsonl                one JSON object per logged step (train and eval)
    RUN/tb/                          TensorBoard scalars (when tensorboard is installed)

Resuming (``--resume``) restores weights, optimizer moments and the step; batches are a pure
function of (seed, step), so the data position follows.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from mirrorhall import streams
from mirrorhall.envs.perception import place_of
from mirrorhall.errors import ConfigError, InputWarning, OutputError
from mirrorhall.files import atomic_write
from mirrorhall.imitation.average import WeightAverage
from mirrorhall.imitation.batches import (
    BatchModel,
    BatchSampler,
    EpisodeArrays,
    PromptTable,
    drop_words,
    episode_arrays,
    make_batch,
    unreadable_batch,
)
from mirrorhall.imitation.checkpoint import (
    CheckpointError,
    load_training_state,
    newest_checkpoint,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from mirrorhall.imitation.generate import ordered_map
from mirrorhall.imitation.model import (
    POSITIONS,
    ModelConfig,
    MultiPolicyModel,
    check_recency,
    count_parameters,
)
from mirrorhall.imitation.model_io import batch_logits
from mirrorhall.imitation.prompts import KIND_NAMES, Kind, unreadable
from mirrorhall.imitation.shards import Dataset
from mirrorhall.imitation.tokenizer import TOKENIZERS, Tokenizer, make_tokenizer

MODEL_SIZES = {
    "tiny": dict(d_model=32, d_evidence=32, n_heads=2, n_layers=1, d_head_mlp=32),
    "small": dict(d_model=64, d_evidence=64, n_heads=4, n_layers=2, d_head_mlp=64),
    "default": dict(d_model=128, d_evidence=128, n_heads=4, n_layers=2, d_head_mlp=128),
    "large": dict(d_model=256, d_evidence=256, n_heads=8, n_layers=4, d_head_mlp=256),
}

PRECISIONS = ("fp32", "bf16", "auto")
SCHEDULES = ("cosine", "linear")


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a CUDA GPU that supports bf16, or a
    CPU with bf16 matrix units (oneDNN's check: AVX512-BF16 or AMX). Elsewhere bf16 is emulated
    and slower than fp32 (8.8x on an AVX2-only CPU, docs/benchmarks.md)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and "AVX512" in torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision a run of ``precision`` uses on ``device``: ``auto`` is bf16 where it is native."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@dataclass(frozen=True)
class TrainConfig:
    """``mirrorhall train``: what to train on, for how long, and where to write."""

    data: str
    """Dataset folder written by ``mirrorhall generate``."""
    out: str
    """Run folder (checkpoints, metrics, TensorBoard)."""
    steps: int = 2000
    """Total optimisation steps of the run (a resumed run continues up to this)."""
    size: str = "default"
    """Model size preset: tiny, small, default, large."""
    episodes_per_batch: int = 8
    samples_per_episode: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    """Linear warm-up steps, then the decay ``schedule`` names."""
    schedule: str = "cosine"
    """After the warm-up: cosine (decay to 10% of lr along a half cosine) or linear (straight down to
    zero at the end of the run)."""
    totals: tuple[tuple[int, int], ...] = ()
    """The totals a time budget (``Budget``) gave the run as it went: (from step, total) pairs, the
    first from the end of the warm-up; from each step on, the learning rate decays from its value
    there to the schedule's end at that total. The last total is ``steps``. Empty: one total,
    ``steps``, from the start."""
    grad_clip: float = 1.0
    ema: float = 0.0
    """Decay of an exponential moving average of the weights kept during training (0: none; 0.998
    averages over about the last 500 steps). The run's checkpoints then hold the average as their
    model (evaluations, probes and export read it) and the weights the optimizer moves beside it,
    for resuming; each evaluation also reports those weights' figures as raw_eval_*."""
    eval_every: int = 200
    checkpoint_every: int = 500
    log_every: int = 20
    seed: int = 0
    eval_fraction: float = 0.1
    """Fraction of episodes held out for evaluation (never trained on)."""
    eval_samples: int = 4096
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    data_processes: int = 1
    """Local processes that turn shards into model arrays at start-up (same arrays for any count)."""
    device: str = "cpu"
    """torch device of the local loop: cpu, cuda or cuda:N (Ray Train workers always use cpu)."""
    precision: str = "fp32"
    """Training forward pass in fp32, or bf16 (autocast; the loss, evidence sums and evaluation
    stay fp32), or auto: bf16 where the device computes it natively, fp32 elsewhere. bf16 is
    faster on CPUs with bf16 matrix units (AVX512-BF16, AMX) and on GPUs, and several times
    slower on CPUs without (emulated: AVX2 only)."""
    tokenizer: str = "word"
    """Prompt tokenizer: word (an unseen word is one unknown word) or ngram (words and their
    hashed character n-grams: related and unseen words share pieces)."""
    positions: str = "absolute"
    """Prompt encoder positions: absolute (learned per position) or relative (rotary; the
    prompt's vector does not depend on where it starts)."""
    word_dropout: float = 0.0
    """Probability that a prompt word (not a number) is read as the unknown word in a training
    batch (drawn per step from the seed); with ngram the word keeps its n-grams."""
    unreadable: float = 0.0
    """Share of SELF, OTHER and SECOND samples asked, in a training batch, a form of their kind
    written partly in made-up words instead (``prompts.unreadable``; pools drawn from the seed):
    SELF names nothing, OTHER an agent, SECOND an agent and "you", and these teach those readings
    for words never seen."""
    unreadable_draws: int = 0
    """With ``unreadable``: how many pool entries each kind offers a batch (0: every sample draws
    its own). Each distinct prompt in a batch is encoded once, so fewer distinct made-up prompts
    make a step cheaper; across a run's steps every pool entry is still drawn."""
    recency: tuple[float, ...] = ()
    """Half-lives, in steps, of the recency-weighted evidence the model reads beside its all-time
    sum (``ModelConfig.recency``; at most 8, each in (0, 10000]); none: the all-time sum alone."""
    place: bool = False
    """The features also say where each move leads (one-hot row and column; ``ModelConfig.place``):
    the model can then read policies that head for places, and reads worlds of this size only."""
    perspective: bool = False
    """The features also carry the perspective columns (``ModelConfig.perspective``): the gem
    columns read from where each agent, as far as the observer saw, last saw gems."""
    pickups: bool = False
    """The features also carry the pickup columns (``ModelConfig.pickups``): the colour of the gem
    each agent has just collected, as far as the observer saw."""

    def __post_init__(self):
        if self.size not in MODEL_SIZES:
            raise ValueError(f"size must be one of {', '.join(MODEL_SIZES)}; got {self.size!r}")
        for f in ("steps", "episodes_per_batch", "samples_per_episode", "eval_every", "checkpoint_every",
                  "log_every", "eval_samples"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive integer, got {v!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        for f, hint in (("word_dropout", ""), ("unreadable", ""), ("ema", " (0: no average)")):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
                raise ValueError(f"{f} must be in [0, 1){hint}, got {v!r}")
        object.__setattr__(self, "recency", check_recency(self.recency))
        object.__setattr__(self, "totals", check_totals(self.totals, self.warmup, self.steps))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        for f, hi in (("threads", 1024), ("warmup", 10**9), ("data_processes", 1024), ("unreadable_draws", 10**6)):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise ValueError(f"{f} must be an integer in 0..{hi}, got {v!r}")
        if self.unreadable_draws and not self.unreadable:
            raise ValueError("unreadable_draws applies to the made-up prompts of unreadable; give unreadable > 0 "
                             "too, or leave unreadable_draws at 0")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Budget:
    """A wall-clock deadline for a training run (a recipe's ``--minutes``). The run times its steps
    ``measure // 5`` to ``measure``, then plans its total: as many steps as fit before ``deadline``
    (at most the config's ``steps``, at least ``measure``), with an evaluation and a checkpoint at
    every tenth of them. Twenty times over the run it times the steps since the last look and
    plans again when the steps that now fit differ from the total by more than 2% of the steps
    still to run: the learning rate then decays from its value there to the new end
    (``TrainConfig.totals``), so a machine that slows down or speeds up moves the end of the
    schedule, not the deadline.

    The timed steps lie inside the learning-rate warm-up (``measure`` is cut to ``warmup``), whose
    rates do not depend on the total, and nothing else a step computes depends on it: the run is
    the one a config with the planned ``steps``, ``totals``, ``eval_every`` and ``checkpoint_every``
    gives (``plan`` records them), so a budget decides how long a run trains, never what a step
    does."""

    deadline: float
    """``time.perf_counter()`` by which the last step should end."""
    measure: int = 100
    share: float = 0.97
    """Of the time left at each plan, the share given to steps: the rest absorbs evaluations and
    checkpoints."""
    plan: dict = field(default_factory=dict)
    """Filled as the run goes: the first plan's measured seconds per step and fields, and every later
    total (``totals``)."""
    _last: tuple[int, float] = field(default=(0, 0.0), init=False, repr=False)
    """The step and time of the start of the timing, the last plan or the last look."""

    def timed(self, cfg: TrainConfig) -> tuple[int, int]:
        """The steps between which the rate is first measured: (first, last)."""
        last = min(self.measure, cfg.warmup, cfg.steps)
        if last < 2:
            raise ConfigError(f"a time budget times the first steps of the warm-up; give --warmup and --steps of at "
                              f"least 2 (got warmup {cfg.warmup}, steps {cfg.steps})")
        return max(1, last // 5), last

    def after(self, cfg: TrainConfig, step: int, now: float) -> TrainConfig | None:
        """Called after each step: starts the timing, makes the first plan, or looks again; returns
        ``cfg`` with a new plan, or None when the run goes on as it is."""
        first, last = self.timed(cfg)
        if step == first:
            self._last = (step, now)
        elif step == last:
            return self.planned(cfg, (now - self._last[1]) / (last - first), now)
        elif step > last:
            return self.revised(cfg, step, now)
        return None

    def fits(self, step: int, seconds_per_step: float, now: float, at_most: int) -> int:
        """The total that ends by the deadline at this rate, counted from ``step``."""
        left = max(0.0, self.deadline - now) * self.share
        return max(step, min(at_most, step + int(left / seconds_per_step)))

    def planned(self, cfg: TrainConfig, seconds_per_step: float, now: float) -> TrainConfig:
        """``cfg`` with the steps that fit the time left after step ``timed(cfg)[1]``."""
        done = self.timed(cfg)[1]
        steps = self.fits(done, seconds_per_step, now, cfg.steps)
        every = -(-steps // 10)
        self.plan = {"seconds_per_step": round(seconds_per_step, 5), "seconds_left": round(self.deadline - now, 1),
                     "steps": steps, "eval_every": every, "checkpoint_every": every, "at_most": cfg.steps,
                     "totals": [], "look_every": max(1, steps // 20)}
        self._last = (done, now)
        return replace(cfg, steps=steps, eval_every=every, checkpoint_every=every)

    def revised(self, cfg: TrainConfig, step: int, now: float) -> TrainConfig | None:
        """At a look (every ``plan["look_every"]`` steps after the warm-up, before the last): ``cfg``
        with a new total when the steps that fit differ from it by more than 2% of those left, else
        None."""
        if step < cfg.warmup or step % self.plan["look_every"] or step >= cfg.steps:
            return None
        seconds_per_step = (now - self._last[1]) / (step - self._last[0])
        self._last = (step, now)
        steps = max(step + 1, self.fits(step, seconds_per_step, now, self.plan["at_most"]))  # past it: end now
        if abs(steps - cfg.steps) <= 0.02 * (cfg.steps - step):
            return None
        totals = (cfg.totals or ((cfg.warmup, cfg.steps),)) + ((step, steps),)
        self.plan.update(steps=steps, totals=[list(t) for t in totals])
        return replace(cfg, steps=steps, totals=totals)


class NonFiniteLoss(ConfigError):
    """The loss or the gradient norm of a training step is NaN or infinite; nothing was updated."""

    def __init__(self, step: int, loss: float, grad_norm: float):
        super().__init__(f"training stopped at step {step}: the loss is {loss:.6g} and the gradient norm "
                         f"{grad_norm:.6g} (not finite)")
        self.step, self.loss, self.grad_norm = step, loss, grad_norm

    def __reduce__(self):  # a Ray Train worker sends it to the driver pickled
        return type(self), (self.step, self.loss, self.grad_norm)


def check_totals(totals, warmup: int, steps: int) -> tuple[tuple[int, int], ...]:
    """``TrainConfig.totals`` as a tuple of (step, total) int pairs, or a one-line error."""
    try:
        out = tuple((int(a), int(b)) for a, b in totals)
        exact = all(isinstance(v, int) and not isinstance(v, bool) for pair in totals for v in pair)
    except (TypeError, ValueError):
        out, exact = (), False
    pairs = zip(out, out[1:], strict=False)
    if not exact or (out and (out[0][0] != warmup or out[-1][1] != steps or any(b <= a for a, b in out)
                              or any(not a[0] < b[0] < a[1] for a, b in pairs))):
        raise ValueError(f"totals must be (step, total) pairs, the first from the warm-up's end ({warmup}), each "
                         f"next step after the last and before its total, each total past its step, the last total "
                         f"--steps ({steps}); got {totals!r}")
    return out


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    segments = cfg.totals or ((cfg.warmup, cfg.steps),)
    top, floor = cfg.lr, 0.0 if cfg.schedule == "linear" else 0.1  # floor: a share of the first segment's top
    for i, (start, total) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else None
        at = step if end is None or step < end else end
        progress = min(1.0, (at - start) / max(1, total - start))
        if cfg.schedule == "linear":
            value = top * (floor + (1 - floor) * (1.0 - progress))
        else:
            value = top * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        if at == step:
            return value
        top, floor = value, floor * top / value  # the next segment falls from here to the same floor
    raise AssertionError("unreachable")


def soft_cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """(S,) cross-entropy of soft labels (S, 5) under the model's logits (S, 5)."""
    return -(label * torch.log_softmax(logits, dim=-1)).sum(-1)


def label_entropy(label: torch.Tensor) -> torch.Tensor:
    return -(label * torch.log(label.clamp(min=1e-12))).sum(-1)


def build_model(cfg: TrainConfig, tokenizer: Tokenizer, n_colors: int, place: tuple[int, ...] = ()) -> MultiPolicyModel:
    """The run's initial model; ``place`` the (height, width) of the data's world when ``cfg.place``."""
    if cfg.place != bool(place):
        raise ValueError("a run with place columns needs the world's (height, width), and only it")
    torch.manual_seed(cfg.seed)
    config = ModelConfig.for_tokenizer(tokenizer, n_colors=n_colors, positions=cfg.positions,
                                      recency=cfg.recency, place=tuple(place), perspective=cfg.perspective,
                                      pickups=cfg.pickups,
                                      **MODEL_SIZES[cfg.size])
    return MultiPolicyModel(config)


def split_episodes(n: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) episode indices: every k-th episode is held out for evaluation."""
    if eval_fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    k = max(2, round(1 / eval_fraction))
    idx = np.arange(n)
    return idx[idx % k != k - 1], idx[idx % k == k - 1]


def dataset_id(data: Dataset) -> dict:
    manifest = json.dumps(data.manifest, sort_keys=True).encode()
    return {"path": str(data.root), "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "population": data.config.population, "episodes": data.config.episodes}


UNREADABLE_POOL = 2048
"""Prompts in made-up words a run draws for each kind (``TrainConfig.unreadable``)."""


class Trainer:
    """Holds the model, optimizer, episodes and sampler; ``train_step`` is the loop body.

    ``wrap`` wraps the batch model (Ray Train passes DDP); ``core`` stays the plain model. ``rank``
    gives each Ray worker its own batch order.
    """

    def __init__(self, cfg: TrainConfig, episodes: list[EpisodeArrays], tokenizer: Tokenizer,
                 n_colors: int, model: torch.nn.Module | None = None, full_view: bool = False,
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None, rank: int = 0,
                 place: tuple[int, ...] = ()):
        self.cfg = cfg
        self.full_view = full_view
        self.tokenizer = tokenizer
        self.device = torch.device(cfg.device)
        self.bf16 = resolve_precision(cfg.precision, self.device) == "bf16"
        self.core = build_model(cfg, tokenizer, n_colors, place) if model is None else model
        self.core.to(self.device)
        self.model = BatchModel(self.core) if wrap is None else wrap(BatchModel(self.core))
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "emb" not in n]
        other = [p for n, p in self.model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
        # rank 0 holds out episodes for evaluation; other Ray workers train on all of theirs
        train_idx, eval_idx = split_episodes(len(episodes), cfg.eval_fraction if rank == 0 else 0.0)
        self.train_eps = [episodes[i] for i in train_idx]
        self.eval_eps = [episodes[i] for i in eval_idx]
        self.prompts = PromptTable(tokenizer, self.core.config.max_prompt_len)
        self.train_prompts = [self.prompts.ids(ep) for ep in self.train_eps]
        self.eval_prompts = [self.prompts.ids(ep) for ep in self.eval_eps]
        if rank == 0 and cfg.eval_fraction > 0 and not self.eval_eps:
            every = max(2, round(1 / cfg.eval_fraction))
            warnings.warn(f"held-out evaluation is empty: every {every}th episode is held out and the data holds "
                          f"{len(episodes)}; generate at least {every} episodes for eval figures", InputWarning,
                          stacklevel=2)
        self.sampler = BatchSampler(len(self.train_eps), cfg.episodes_per_batch, cfg.samples_per_episode,
                                    streams.worker_seed(cfg.seed, rank))
        self.step = 0
        self.average = WeightAverage(self.core, cfg.ema) if cfg.ema else None
        self.unreadable = None
        if cfg.unreadable > 0:  # pools for the run, drawn from its seed
            rng, known = streams.rng(streams.UNREADABLE_POOL, cfg.seed), set(tokenizer.vocab)
            agents = max(ep.own.shape[1] for ep in episodes)
            self.unreadable = {Kind.SELF: torch.from_numpy(self.prompts.add(
                unreadable(Kind.SELF, UNREADABLE_POOL, rng, known)))}
            for kind in (Kind.OTHER, Kind.SECOND) if agents > 1 else ():
                self.unreadable[kind] = torch.from_numpy(np.stack([self.prompts.add(
                    unreadable(kind, UNREADABLE_POOL // agents, rng, known, target=k)) for k in range(agents)]))
        # word dropout spares padding, <unk> and numbers (agent ids)
        self.keep = torch.tensor([i < 2 or w.isdigit() for i, w in enumerate(tokenizer.vocab)])

    def batch(self, step: int):
        chosen = self.sampler.episodes(step)
        eps = [self.train_eps[i] for i in chosen]
        picks = self.sampler.samples(step, [len(e.kind) for e in eps])
        batch = make_batch(eps, picks, self.prompts, self.full_view, [self.train_prompts[i] for i in chosen])
        if self.unreadable is not None:
            batch = unreadable_batch(batch, self.cfg.unreadable, streams.rng(streams.UNREADABLE, self.sampler.seed, step),
                                     self.unreadable, self.cfg.unreadable_draws)
        if self.cfg.word_dropout > 0:
            batch = drop_words(batch, self.cfg.word_dropout, streams.rng(streams.WORD_DROPOUT, self.sampler.seed, step),
                               self.keep)
        return batch.to(self.device)

    def train_step(self) -> dict:
        """One optimisation step on batch ``self.step``; returns scalar metrics."""
        self.model.train()
        batch = self.batch(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.cfg, self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(batch)
        ce = soft_cross_entropy(logits.float(), batch.label)
        loss = ce.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        # checked before the update, so the weights stay the last good ones; under DDP the gradient
        # norm is the same on every worker (gradients are averaged), so all of them stop together
        if not (torch.isfinite(loss) and torch.isfinite(gnorm)):
            raise NonFiniteLoss(self.step + 1, float(loss.detach()), float(gnorm))
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.core, self.step)
        self.step += 1
        kl = (ce - label_entropy(batch.label)).detach()
        return {"step": self.step, "loss": float(loss.detach()), "kl": float(kl.mean()), "grad_norm": float(gnorm),
                "lr": self.optimizer.param_groups[0]["lr"], "samples": int(batch.label.shape[0])}

    def evaluate(self) -> dict:
        """Held-out cross-entropy and KL to the exact label, overall and per prompt kind, of the
        checkpoint's model (the average, with ``ema``; then the trained weights' as raw_eval_*)."""
        if self.average is None:
            return self._evaluate()
        raw = self._evaluate()
        with self.average.applied(self.core):
            out = self._evaluate()
        return {**out, **{f"raw_{k}": v for k, v in raw.items() if k.startswith(("eval_ce", "eval_kl"))}}

    @torch.no_grad()
    def _evaluate(self) -> dict:
        if not self.eval_eps:
            return {}
        self.model.eval()
        per = max(1, self.cfg.eval_samples // len(self.eval_eps))
        rng = streams.rng(streams.EVAL_SAMPLES, self.cfg.seed)
        ce_all, kl_all, kind_all = [], [], []
        for start in range(0, len(self.eval_eps), 16):
            eps = self.eval_eps[start: start + 16]
            picks = [np.sort(rng.choice(len(e.kind), size=min(per, len(e.kind)), replace=False)) for e in eps]
            batch = make_batch(eps, picks, self.prompts, self.full_view,
                               self.eval_prompts[start: start + 16]).to(self.device)
            logits = batch_logits(self.core, batch)
            ce = soft_cross_entropy(logits, batch.label)
            ce_all.append(ce)
            kl_all.append(ce - label_entropy(batch.label))
            kind_all.append(batch.kind)
        ce, kl, kind = torch.cat(ce_all), torch.cat(kl_all), torch.cat(kind_all)
        out = {"eval_ce": float(ce.mean()), "eval_kl": float(kl.mean()), "eval_samples": int(ce.numel())}
        for k, name in enumerate(KIND_NAMES):
            sel = kind == k
            if sel.any():
                out[f"eval_ce_{name}"] = float(ce[sel].mean())
                out[f"eval_kl_{name}"] = float(kl[sel].mean())
                out[f"eval_n_{name}"] = int(sel.sum())
        return out


def check_device(device: str) -> None:
    """A one-line error when the asked-for device is not there."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                             "use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device}: only {torch.cuda.device_count()} CUDA GPU(s) visible; "
                             "use cuda:0")


def _shard_arrays(root: str, path: str, pairs: bool | None, place: bool, perspective: bool,
                  pickups: bool) -> list[EpisodeArrays]:
    data = Dataset(root, verify=False)
    return [episode_arrays(ep, data.world, pairs, place, perspective, pickups) for ep in data.shard_episodes(Path(path))]


def load_episodes(data: Dataset, processes: int = 1, pairs: bool | None = None,
                  place: bool = False, perspective: bool = False, pickups: bool = False) -> list[EpisodeArrays]:
    """Every episode's model arrays, in dataset order (``processes`` > 1 builds shards in parallel);
    ``place``, ``perspective``, ``pickups``: with those columns."""
    paths = data.shard_paths
    if processes <= 1 or len(paths) < 2:
        return [episode_arrays(ep, data.world, pairs, place, perspective, pickups) for ep in data.episodes()]
    args = [(str(data.root), str(p), pairs, place, perspective, pickups) for p in paths]
    return [ep for part in ordered_map(_shard_arrays, args, processes) for ep in part]


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          on_log: Callable[[dict], None] | None = None, budget: Budget | None = None) -> dict:
    """The local training loop; returns the last metrics. With ``budget`` the run's length is
    planned to end by its deadline (``Budget``; its ``plan`` says what was planned).

    This is the local loop's entry point (the CLI and the tests call it; each Ray worker's is
    ``train_ray._loop``), so it applies ``cfg.threads`` to the process before anything is built.
    """
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_device(cfg.device)
    if budget is not None and resume:
        raise ConfigError("a time budget plans a run from its first step; resume without one")
    if budget is not None:
        budget.timed(cfg)  # a warm-up too short to time is refused before any work
    out = Path(cfg.out)
    if not resume and (out / "latest.json").exists():  # before any work (and any warning about the data)
        raise OutputError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    data = Dataset(cfg.data)
    tokenizer = make_tokenizer(cfg.tokenizer)
    probe = ModelConfig.for_tokenizer(tokenizer, n_colors=data.world.n_colors, positions=cfg.positions,
                                      **MODEL_SIZES[cfg.size])
    if data.world.n_agents > probe.max_agents:
        raise ConfigError(f"the dataset has {data.world.n_agents} agents; the model reads at most {probe.max_agents}")
    episodes = load_episodes(data, cfg.data_processes, place=cfg.place, perspective=cfg.perspective,
                             pickups=cfg.pickups)
    trainer = Trainer(cfg, episodes, tokenizer, data.world.n_colors,
                      full_view=data.world.view_radius is None, place=place_of(data.world, cfg.place))
    log_path = out / "metrics.jsonl"
    resumed = None
    if resume:
        resumed = _resume(trainer, out, cfg)
        cfg = trainer.cfg
        _truncate_metrics(log_path, trainer.step)
    out.mkdir(parents=True, exist_ok=True)
    # a resumed run re-runs the steps after its checkpoint: TensorBoard hides their old events
    writer = _tensorboard(out, purge_step=trainer.step + 1 if resume else None)
    meta = {"dataset": dataset_id(data), "parameters": count_parameters(trainer.model)}
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train", unit="step", disable=not progress)
    metrics: dict = {}
    t0, seen = time.perf_counter(), 0
    while trainer.step < cfg.steps:
        try:
            metrics = trainer.train_step()
        except NonFiniteLoss as err:
            bar.close()
            if writer:
                writer.close()
            raise ConfigError(f"{err}; {_after_divergence(out)}") from None
        seen += metrics["samples"]
        step = trainer.step
        if budget is not None and (plan := budget.after(cfg, step, now := time.perf_counter())) is not None:
            cfg = trainer.cfg = plan
            bar.total = cfg.steps
            _log(log_path, writer, "plan", {"step": step, "steps": cfg.steps,
                                            "seconds_left": round(budget.deadline - now, 1)})
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics["samples_per_s"] = seen / max(time.perf_counter() - t0, 1e-9)
            _log(log_path, writer, "train", metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", kl=f"{metrics['kl']:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            ev = trainer.evaluate()
            metrics.update(ev)
            _log(log_path, writer, "eval", {"step": step, **ev})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            write_checkpoint(trainer, out, meta, metrics)
        if on_log:
            on_log(metrics)
        bar.update(1)
    bar.close()
    if resumed is not None and not metrics:  # resumed at or past --steps: nothing to re-run
        metrics = {**resumed.get("metrics", {}), "step": trainer.step}
        if latest_step(out) != trainer.step:  # e.g. the newest checkpoint is one Ray Train persisted
            write_checkpoint(trainer, out, meta, metrics)
    if writer:
        writer.close()
    return metrics


def _after_divergence(out: Path) -> str:
    """What a run stopped by a non-finite loss keeps: its last good checkpoint, if it has one (the
    command removes a run folder it created that holds none)."""
    if latest_step(out) is not None:
        return (f"{resolve_checkpoint(out)} stays the run's last good checkpoint; resume from it with a lower "
                "--lr or --grad-clip")
    return "no checkpoint had been written yet; try a lower --lr or --grad-clip"


def latest_step(out: Path) -> int | None:
    """The step of the checkpoint ``RUN/latest.json`` names, None if it names none."""
    try:
        return read_meta(resolve_checkpoint(out))["step"]
    except CheckpointError:
        return None


def write_checkpoint(trainer: Trainer, out: Path, meta: dict, metrics: dict) -> Path:
    folder = out / "checkpoints" / f"step-{trainer.step:08d}"
    save_checkpoint(folder, trainer.core, trainer.tokenizer, run_config=trainer.cfg.to_json(),
                    step=trainer.step, dataset=meta["dataset"], metrics=metrics,
                    optimizer=trainer.optimizer, extra={"parameters": meta["parameters"],
                                                        "data_position": {"step": trainer.step}},
                    average=trainer.average)
    atomic_write(out / "latest.json", json.dumps({"checkpoint": str(folder.relative_to(out))}).encode())
    return folder


def _resume(trainer: Trainer, out: Path, cfg: TrainConfig) -> dict:
    if not out.exists():
        raise ConfigError(f"--resume: {out} does not exist; start a run without --resume")
    folder = newest_checkpoint(out)  # a damaged or hostile latest.json raises, naming the file
    if folder is None:
        raise ConfigError(f"--resume: {out} holds no checkpoint yet; start the run without --resume")
    old = read_meta(folder).get("run_config", {})
    if not isinstance(old, dict):
        raise CheckpointError(f"{folder / 'checkpoint.json'}: 'run_config' must be a JSON object")
    defaults = {"tokenizer": "word", "positions": "absolute", "recency": [], "place": False,
                "perspective": False, "pickups": False}  # runs saved before these fields
    for key in ("size", "seed", "episodes_per_batch", "samples_per_episode", "data", "tokenizer", "positions",
                "recency", "place", "perspective", "pickups"):
        now = getattr(cfg, key)
        if old.get(key, defaults.get(key)) != (list(now) if isinstance(now, tuple) else now):  # as JSON keeps it
            raise ConfigError(f"--resume: {folder}: {key} was {old.get(key)!r} in this run, now "
                             f"{getattr(cfg, key)!r}; use the original value or another --out")
    saved = old.get("totals") or ()
    if saved and not cfg.totals and (cfg.steps, cfg.warmup) == (old.get("steps"), old.get("warmup")):
        trainer.cfg = replace(cfg, totals=saved)  # a run a time budget planned goes on along its plan
    meta = load_training_state(folder, trainer.core, trainer.optimizer, trainer.average)
    trainer.step = int(meta["step"])
    return meta


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records of steps after ``step`` (and any line a kill cut short) before a resumed run
    logs those steps again, so every step appears once in metrics.jsonl."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            continue
        keep.append(line + "\n")
    atomic_write(path, "".join(keep).encode())


def _tensorboard(out: Path, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)


def _log(path: Path, writer, phase: str, metrics: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"phase": phase, **metrics}) + "\n")
    if writer:
        for k, v in metrics.items():
            if k != "step" and isinstance(v, (int, float)):
                writer.add_scalar(f"{phase}/{k}", v, metrics["step"])
