"""The cast of a scene: every agent's persona as parameter arrays, evaluated exactly and in batch.

``Cast`` holds B worlds x N agents of persona specs. It gives exact action probabilities for all
agents in their own situations, or for any persona in any other agent's situation (the
counterfactual query behind OTHER(k) labels), and updates the imitators' beliefs. It is a pure
policy: the only state is ``CastState`` (the imitators' log beliefs; in casts with believers,
every agent's memory of the gems; in casts with persona families (``agents/families.py``), their
phases and recent cells), passed in and returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from mirrorhall.agents.bayes import (
    BasesMemo,
    HypothesisSet,
    TraitBases,
    believer_probs,
    softmax,
    trait_codes,
)
from mirrorhall.agents.families import (
    FAMILY_CODE,
    NOT_FAMILY,
    FamilyParams,
    FamilyState,
    family_probs,
    look,
)
from mirrorhall.agents.personas import (
    Believer,
    Imitator,
    Memoryless,
    Mirror,
    PersonaSpec,
    Species,
    Trait,
)
from mirrorhall.envs.core import N_ACTIONS, NO_ACTION, WorldConfig, WorldCore, WorldState
from mirrorhall.envs.perception import (
    Situations,
    pickups,
    post_move_cells,
    remember,
    seen_gem_cells,
    sightings,
)

TRAIT, SPECIES, IMITATOR, MIRROR, BELIEVER, MEMORYLESS = 0, 1, 2, 3, 4, 5
# Mirror map of actions: stay, up, down, left, right -> stay, up, down, right, left.
REFLECT = np.array([0, 1, 2, 4, 3])


@dataclass
class CastParams:
    """Persona parameters with a common leading shape P (B, N) or any gathered shape."""

    kind: np.ndarray  # (P...) int: TRAIT, SPECIES, IMITATOR or MIRROR
    likes: np.ndarray  # (P...) index into gem_basis (trait personas, and an imitator's own trait)
    social: np.ndarray  # (P...) index into social_basis
    beta: np.ndarray  # (P...) inverse temperature
    species: np.ndarray  # (P..., 5) fixed action distribution of a random agent
    target: np.ndarray  # (P...) imitated or mirrored agent, -1 otherwise
    fidelity: np.ndarray  # (P...) imitator fidelity
    noise: np.ndarray  # (P...) mirror noise
    family: FamilyParams  # (P...) the parameters of family personas (kind NOT_FAMILY elsewhere)

    def take(self, index) -> CastParams:
        return CastParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class CastState:
    """The only persona state: each imitator's log belief over the hypothesis set, (in casts
    that remember, ``Cast.remembers``) every agent's memory of the gems, and (in casts with
    persona families, ``Cast.has_families``) their state and what they read of the world now."""

    log_belief: np.ndarray  # (B, N, H); rows of non-imitators are unused
    memory: np.ndarray | None = None  # (B, N, C, H*W) bool: where each agent believes gems of colour c are
    after: np.ndarray | None = None  # (B, N, 5) int64 flat cell of each agent after each move, now
    family: FamilyState | None = None  # (B, N) phases and recent cells of family personas
    gem_cell: np.ndarray | None = None  # (B, N, G) int64 the gem cells each agent sees now, -1 unseen
    gems_before: np.ndarray | None = None  # (B, G, 2) the gems at the last look (for pickups)

    def copy(self) -> CastState:
        def cp(x):
            return None if x is None else x.copy()
        return CastState(self.log_belief.copy(), cp(self.memory), cp(self.after), cp(self.family),
                         cp(self.gem_cell), cp(self.gems_before))


@dataclass
class FamilyInputs:
    """What family personas read, gathered to a leading shape P: the persona's own state and the
    situation's post-move cells and gem sightings (which need not be the persona's own)."""

    state: FamilyState  # (P...) the persona's phase and recent cells
    after: np.ndarray  # (P..., 5) post-move cells of the situation
    gem_cell: np.ndarray  # (P..., G) gem cells seen in the situation, -1 unseen


def trait_probs(sit: Situations | TraitBases, likes: np.ndarray, social: np.ndarray,
                beta: np.ndarray) -> np.ndarray:
    """(P..., 5) trait personas (codes from ``trait_codes``) in situations of leading shape P.

    ``sit`` may be the situations' precomputed ``TraitBases``.
    """
    tb = sit if isinstance(sit, TraitBases) else TraitBases(sit)
    u = tb.utility(np.asarray(likes), np.asarray(social))
    return softmax(np.asarray(beta)[..., None] * u)


_ONEHOT = np.eye(N_ACTIONS)


def persona_probs(params: CastParams, sit: Situations, log_belief: np.ndarray,
                  hypotheses: HypothesisSet, tb: TraitBases | None = None, memory: np.ndarray | None = None,
                  after: np.ndarray | None = None, config: WorldConfig | None = None,
                  family: FamilyInputs | None = None) -> np.ndarray:
    """(P..., 5) exact action probabilities of personas ``params`` in situations ``sit``.

    ``params``, ``sit`` and ``log_belief`` (P..., H) share the leading shape P (the parameters
    and beliefs may also broadcast against it): element p is persona p acting in situation p,
    which need not be its own. ``tb``: the bases of ``sit`` when the caller already has them
    (computed from ``sit`` otherwise). Believers need ``memory`` (P..., C, H*W) (the persona's
    own), ``after`` (P..., 5) (the post-move cells of the situation) and the world ``config``.
    Family personas need ``family`` (their own state, the situation's cells; leading shape P, as
    ``params``) and the world ``config``.
    """
    tb = TraitBases(sit) if tb is None else tb
    out = trait_probs(tb, params.likes, params.social, params.beta)  # (P..., 5) incl. imitators' own

    lead = out.shape[:-1]
    kind = np.broadcast_to(params.kind, lead)
    if (kind == SPECIES).any():
        species = np.nonzero(kind == SPECIES)
        out[species] = np.broadcast_to(params.species, out.shape)[species]
    if (kind == MIRROR).any():
        mirror = np.nonzero(kind == MIRROR)
        target = np.broadcast_to(params.target, lead)[mirror]
        last = np.broadcast_to(sit.last_action, (*lead, sit.last_action.shape[-1]))[(*mirror, target)]
        out[mirror] = mirror_probs(last, np.broadcast_to(params.noise, lead)[mirror])
    if (kind == IMITATOR).any():
        idx = np.nonzero(kind == IMITATOR)
        belief = np.broadcast_to(log_belief, (*lead, log_belief.shape[-1]))[idx]
        pred = np.einsum("ph,pha->pa", softmax(belief), hypotheses.probs(tb.take(idx)))  # (M, 5)
        f = np.broadcast_to(params.fidelity, lead)[idx][:, None]
        out[idx] = f * pred + (1 - f) * out[idx]
    if (kind == BELIEVER).any():
        if memory is None or after is None or config is None:
            raise ValueError("believers need their memory, the post-move cells and the world config")
        idx = np.nonzero(kind == BELIEVER)
        mem = np.broadcast_to(memory, (*lead, *memory.shape[-2:]))[idx]
        aft = np.broadcast_to(after, (*lead, N_ACTIONS))[idx]
        out[idx] = believer_probs(config, tb.take(idx), np.broadcast_to(params.likes, lead)[idx],
                                  np.broadcast_to(params.social, lead)[idx], np.broadcast_to(params.beta, lead)[idx],
                                  mem, aft)
    if (params.family.kind != NOT_FAMILY).any():
        if family is None or config is None:
            raise ValueError("family personas need their state, the situation's cells and the world config")
        if params.family.kind.shape != lead:
            raise ValueError("family personas: parameters must have the leading shape of the situations")
        family_probs(params.family, family.state, sit, family.after, family.gem_cell, config, out=out)
    return out


def mirror_probs(last: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(P..., 5) mirrors whose target's last action is ``last`` (P...): its reflection with
    probability 1 - noise, uniform noise; uniform when the target's last action is unseen."""
    seen = last != NO_ACTION
    onehot = _ONEHOT[REFLECT[np.where(seen, last, 0)]]  # (P..., 5)
    noise = noise[..., None]
    return np.where(seen[..., None], (1 - noise) * onehot + noise / N_ACTIONS, 1.0 / N_ACTIONS)


class Cast:
    """The personas of B worlds x N agents, validated against a world configuration."""

    def __init__(self, specs: Sequence[Sequence[PersonaSpec]], config: WorldConfig,
                 hypotheses: HypothesisSet | None = None, remember_all: bool = False):
        specs = [list(row) for row in specs]
        n = config.n_agents
        if not specs or any(len(row) != n for row in specs):
            raise ValueError(f"personas: need one row of exactly n_agents={n} specs per world")
        self.specs = specs
        self.config = config
        self.hypotheses = hypotheses or HypothesisSet.grid(config.n_colors, n)
        if self.hypotheses.n_agents != n or self.hypotheses.n_colors != config.n_colors:
            raise ValueError("hypotheses were built for a different number of agents or colours")
        b = len(specs)
        p = CastParams(
            kind=np.zeros((b, n), np.int64), likes=np.full((b, n), config.n_colors, np.int64),
            social=np.zeros((b, n), np.int64), beta=np.ones((b, n)),
            species=np.full((b, n, N_ACTIONS), 1.0 / N_ACTIONS), target=np.full((b, n), -1, np.int64),
            fidelity=np.zeros((b, n)), noise=np.zeros((b, n)),
            family=FamilyParams.build([s for row in specs for s in row], config, agents=list(range(n)) * b)[
                np.arange(b * n).reshape(b, n)],
        )
        for w, row in enumerate(specs):
            for i, spec in enumerate(row):
                self._fill(p, w, i, spec, n)
        self.params = p
        self.has_families = (p.family.kind != NOT_FAMILY).any()
        """Whether the state carries family personas' state (phase, recent cells)."""
        self.bases = BasesMemo()  # the bases of the situations asked about last (no effect on results)
        self.remembers = bool((p.kind == BELIEVER).any()) or remember_all
        """Whether the state carries every agent's memory (believers in the cast, or asked for)."""

    def _fill(self, p: CastParams, w: int, i: int, spec: PersonaSpec, n: int) -> None:
        trait = spec.own if isinstance(spec, Imitator) else spec
        if isinstance(trait, (Believer, Memoryless)):
            trait = trait.trait
        if isinstance(trait, Trait):
            p.likes[w, i], p.social[w, i], p.beta[w, i] = trait_codes(trait, self.config.n_colors, n)
        if isinstance(spec, Trait):
            p.kind[w, i] = TRAIT
        elif isinstance(spec, Believer):
            p.kind[w, i] = BELIEVER
        elif isinstance(spec, Memoryless):
            p.kind[w, i] = MEMORYLESS
        elif isinstance(spec, Species):
            p.kind[w, i] = SPECIES
            p.species[w, i] = spec.probs
        elif getattr(spec, "kind", None) in FAMILY_CODE:
            p.kind[w, i] = FAMILY_CODE[spec.kind]  # parameters in p.family
        elif isinstance(spec, (Imitator, Mirror)):
            if spec.target >= n:
                raise ValueError(
                    f"agent_{i} targets agent {spec.target}, which does not exist "
                    f"(agents 0..{n - 1})"
                )
            if spec.target == i:
                verb = "imitate" if isinstance(spec, Imitator) else "mirror"
                raise ValueError(f"agent_{i} cannot {verb} itself; choose another target")
            p.target[w, i] = spec.target
            if isinstance(spec, Imitator):
                p.kind[w, i], p.fidelity[w, i] = IMITATOR, spec.fidelity
            else:
                p.kind[w, i], p.noise[w, i] = MIRROR, spec.noise
        else:
            raise ValueError(f"unknown persona spec {spec!r}")

    @property
    def batch_size(self) -> int:
        return self.params.kind.shape[0]

    def initial_state(self) -> CastState:
        b, n = self.params.kind.shape
        family = FamilyState.initial((b, n), self.params.family.max_memory) if self.has_families else None
        return CastState(np.broadcast_to(self.hypotheses.log_prior, (b, n, len(self.hypotheses))).copy(),
                         family=family)

    def perceive(self, state: CastState, core: WorldCore, world: WorldState) -> CastState:
        """Every agent looks at the world as it is now (before it acts): in a cast that remembers,
        each memory takes in what its agent sees (``perception.remember``); in a cast with family
        personas, each takes in where it stands and what it collected in the step just taken
        (``families.look``, ``perception.pickups``) and what it sees now; otherwise the state is
        returned unchanged. Called by ``run_scene`` at every step before ``probs``."""
        if not (self.remembers or self.has_families):
            return state
        out = replace(state, after=post_move_cells(core, world))  # (B, N, 5)
        if self.remembers:
            cell_seen, gem_here = sightings(core, world)
            out.memory = remember(state.memory, cell_seen, gem_here)
        if self.has_families:
            picked = None if state.gems_before is None else pickups(core, state.gems_before, world.agent_pos,
                                                                     world.t - 1)  # (B, N)
            out.family = look(self.params.family, state.family, core.cells(world.agent_pos), picked)
            out.gem_cell = seen_gem_cells(core, world)  # (B, N, G)
            out.gems_before = world.gem_pos.copy()
        return out

    def family_inputs(self, state: CastState, persona, situation) -> FamilyInputs | None:
        """What family personas at index ``persona`` (into (B, N)) read in the situations at index
        ``situation``: their own state, the situations' cells; None in casts without families."""
        if not self.has_families:
            return None
        if state.after is None:
            raise ValueError("family personas read the world through Cast.perceive; call it before asking")
        return FamilyInputs(state.family[persona], state.after[situation], state.gem_cell[situation])

    def probs(self, sit: Situations, state: CastState) -> np.ndarray:
        """(B, N, 5) every agent's action distribution in its own situation."""
        every = (slice(None), slice(None))
        return persona_probs(self.params, sit, state.log_belief, self.hypotheses, self.bases(sit),
                             state.memory, state.after, self.config, self.family_inputs(state, every, every))

    def probs_as(self, persona: np.ndarray, sit: Situations, state: CastState,
                 situation: np.ndarray | None = None) -> np.ndarray:
        """(B, K, 5) what agent ``persona[b, k]`` would do in agent ``situation[b, k]``'s situation.

        ``persona`` and ``situation`` are (B, K) agent indices; situation defaults to 0..N-1.
        The persona keeps its own internal state (an imitator its belief about its target).
        """
        b = self.batch_size
        persona = np.asarray(persona, dtype=np.int64)
        situation = np.broadcast_to(np.arange(sit.shape[1]), persona.shape) if situation is None \
            else np.asarray(situation, dtype=np.int64)
        rows = np.arange(b)[:, None]
        index = (rows, situation)
        memory = None if state.memory is None else state.memory[rows, persona]
        after = None if state.after is None else state.after[rows, situation]
        return persona_probs(self.params.take((rows, persona)), sit.take(index),
                             state.log_belief[rows, persona], self.hypotheses, self.bases(sit).take(index),
                             memory, after, self.config, self.family_inputs(state, (rows, persona), index))

    def observe(self, state: CastState, sit: Situations, actions: np.ndarray) -> CastState:
        """Each imitator updates its belief from its target's action in the step just taken.

        ``sit`` are the situations in which ``actions`` (B, N) were chosen. An imitator learns
        from its target's (situation, action) pair when it could see the target at that time.
        """
        imit = self.params.kind == IMITATOR
        if not imit.any():
            return state
        wb, wm = np.nonzero(imit)
        tgt = self.params.target[wb, wm]
        seen = sit.agent_seen[wb, wm, tgt]
        ll = self.hypotheses.log_probs(self.bases(sit).take((wb, tgt)))  # (M, H, 5)
        step = ll[np.arange(wb.size), :, actions[wb, tgt]]  # (M, H)
        out = state.log_belief.copy()
        out[wb, wm] += np.where(seen[:, None], step, 0.0)
        out[wb, wm] -= out[wb, wm].max(-1, keepdims=True)  # keep log beliefs bounded
        return replace(state, log_belief=out)


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(..., 5) probabilities -> (...) int64 actions by inverse CDF, one uniform draw each."""
    u = rng.random(probs.shape[:-1])
    cdf = np.cumsum(probs, axis=-1)
    return np.minimum((cdf < u[..., None] * cdf[..., -1:]).sum(-1), N_ACTIONS - 1).astype(np.int64)
