"""mirrorhall.analysis: probes of a trained model against exact observers, and their reports.

One module per probe (``calibration``, ``describe``, ``imitate``, ``second_order``, ``mirror``
for the ``mirror_test`` probe, ``outcome``), each with ``run`` (the measurement, a JSON-ready
result with its own ``targets``), ``plot(result, path)`` and ``section(result)`` (its part of
``report.md``). ``report`` holds the registry, runs probes and joins the sections; ``reporting``
the formatting they share; ``common`` the scenes, the model under test and the statistics.
``compare_direct`` puts PPO trained on log pi_test(a|s) (from the flat observation, and from the
model's own relational features) beside the model watching pi_test; only its RLlib learner
imports Ray.
"""
