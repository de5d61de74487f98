"""Direct optimisation vs generalisation + inference, measured: ``mirrorhall compare-direct``.

For each of a few trait personas pi_test (drawn, distinct, from the training split of the
population), two ways of coming to act like pi_test are scored by the same number: the exact
expected cross-entropy ``CE = -sum_a pi_test(a|s) log q(a|s)`` (nats) of the learner's action
distribution q against pi_test's, in held-out situations, as a function of environment steps.

(a) PPO, direct optimisation (``ImitationRewardEnv``). A fresh policy (RLlib PPO, one MLP over the
    flat observation, ``mirrorhall.analysis.compare_direct.ppo.ppo_config``) acts as agent 0 among scripted
    personas of the population; its reward for action a in its own situation s is
    ``log pi_test(a|s)``, computed exactly (``Cast`` / ``trait_probs`` on the learner's situation).
    Maximising E[log pi_test(a|s)] alone is solved by pi_test's most likely action, not by
    pi_test, so the learner adds the policy's own ``-log q_old(a|s)`` (the sampling
    distribution's log-probability, ``MaxEntPPOLearner``), and ``gamma = 0``: the per-step
    objective is then ``-KL(q || pi_test)``, maximised by q = pi_test exactly, and PPO's advantage
    standardisation does not move that optimum. Env steps: the learner's sampled steps (one
    learner per world, so agent steps = env steps). CE is evaluated after every PPO iteration.
(b) The shared model, generalisation + inference. It acts as agent 0 ("behave as yourself") in
    scenes of the population where agent k is pi_test; after K steps it is told
    "behave as agent k" and scored in agent 0's situation at step K (the ``imitate`` probe's
    measurement, ``ModelProbe.query``). Env steps: K, the steps of pi_test it watched; the model
    is never trained on pi_test and gets no reward. Beside it, the Bayes-optimal observer over
    the population's trait hypotheses with the same K steps (the ceiling of (b)), and the prior.

Held-out situations: for the model, agent 0's situation at step K of each scene (E scenes per
persona); for PPO, agent 0's situations at every step 0..max(K) of the same scenes, which PPO
never sees in training (its own worlds come from another seed stream). Intervals are 95%
bootstrap intervals over those situations; for PPO they do not cover the spread between training
runs (one seed per persona). The floor of any CE is pi_test's entropy (reported as
``entropy``); a uniform policy scores log 5 = 1.609.

Modules: ``env`` (``ImitationRewardEnv``, the RLlib env of arm (a)), ``ppo`` (RLlib PPO with one
shared policy for ``mirrorhall_v0``), ``learner`` (the entropy term, ``MaxEntPPOLearner`` and
arm (a)'s training run), ``experiment`` (arm (b), both arms together and the summary: ``run``)
and ``report`` (``DIR/compare_direct.{json,png,md}``).

Imports Ray and RLlib: import this package explicitly. Importing it starts nothing and sets
nothing; the functions that configure or start Ray apply the loopback settings of
``mirrorhall.raykit`` first.
"""

from mirrorhall.analysis.compare_direct.experiment import run

__all__ = ["run"]
