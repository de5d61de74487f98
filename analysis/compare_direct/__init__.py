"""Direct optimisation vs generalisation + inference, measured: ``mirrorhall compare-direct``.

For each of a few trait personas pi_test (drawn, distinct, from the training split of the
population), two ways of coming to act like pi_test are scored by the same number: the exact
expected cross-entropy ``CE = -sum_a pi_test(a|s) log q(a|s)`` (nats) of the learner's action
distribution q against pi_test's, in held-out situations, as a function of environment steps.

(a) PPO, direct optimisation. A fresh policy acts as agent 0 among scripted personas of the
    population; its reward for action a in its own situation s is ``log pi_test(a|s)``, computed
    exactly (``Cast`` / ``trait_probs`` on the learner's situation). Maximising E[log pi_test(a|s)]
    alone is solved by pi_test's most likely action, not by pi_test, so the learner adds the
    policy's own ``-log q_old(a|s)`` (the sampling distribution's log-probability) and
    ``gamma = 0``: the per-step objective is then ``-KL(q || pi_test)``, maximised by q = pi_test
    exactly, and advantage standardisation does not move that optimum. Env steps: the learner's
    sampled steps (one learner per world, so agent steps = env steps). Three learners:
    ``flat`` ("from pixels": an MLP over the flat observation) and ``relational`` (the model's
    inputs: the ego's per-action relational features read through ``perception``, and a head
    of the model's form), both in ``vecppo`` (vectorised worlds, plain torch, no Ray), and
    ``rllib`` (RLlib's PPO with the flat MLP, ``learner``/``ppo``/``env``). Each run trains to a
    budget of env steps or until its KL to pi_test on the held-out set is within a tolerance, and
    is evaluated at log-spaced iterations.
(b) The shared model, generalisation + inference. It acts as agent 0 ("behave as yourself") in
    scenes of the population where agent k is pi_test; after K steps it is told
    "behave as agent k" and scored in agent 0's situation at step K (the ``imitate`` probe's
    measurement, ``ModelProbe.query``). Env steps: K, the steps of pi_test it watched; the model
    is never trained on pi_test and gets no reward. Beside it, the Bayes-optimal observer over
    the population's trait hypotheses with the same K steps (the ceiling of (b)), and the prior.

Held-out situations: for the model, agent 0's situation at step K of each scene (E scenes per
persona); for PPO, agent 0's situations at every step 0..max(K) of the same scenes, which PPO
never sees in training (its own worlds come from another seed stream). A run's intervals are 95%
bootstrap intervals over those situations; a learner's mean curve and its ratios have intervals
over runs (personas x seeds). The floor of any CE is pi_test's entropy (reported as
``entropy``); a uniform policy scores log 5 = 1.609.

The ratio (``ratio``): for K in 5, 10, 20, 40, the env steps each PPO learner needs until its
KL to pi_test is at most the model's after K watched steps (per persona; interpolated on the
curve in log env steps), and those steps / K; a run that never gets there within its budget
gives a lower bound.

Modules: ``vecppo`` (``ImitationWorlds``, the two vectorised learners and their PPO loop),
``env`` (``ImitationRewardEnv``, the RLlib env of the ``rllib`` learner), ``ppo`` (RLlib PPO with
one shared policy for ``mirrorhall_v0``), ``learner`` (the entropy term, ``MaxEntPPOLearner`` and
the ``rllib`` learner's training run), ``ratio`` (steps to reach a target on a curve, and their
summary over runs), ``experiment`` (arm (b), both arms together and the summary: ``run``) and
``report`` (``DIR/compare_direct.{json,png,md}``).

Importing this package imports neither Ray nor RLlib; the ``rllib`` learner imports them when
it runs (``env``, ``ppo`` and ``learner`` import them at module level). Nothing starts or sets
anything at import; the functions that configure or start Ray apply the loopback settings of
``mirrorhall.raykit`` first.
"""

from mirrorhall.analysis.compare_direct.experiment import progress_total, run

__all__ = ["progress_total", "run"]
