"""mirrorhall: a multi-agent theory-of-mind laboratory.

The code folders are mapped under this one import name:
``mirrorhall.envs`` (the world), ``mirrorhall.agents`` (personas, the Bayes observer),
``mirrorhall.imitation`` (prompts, datasets, the model, training) and
``mirrorhall.analysis`` (probes and reports). Heavy libraries (torch, ray) are imported lazily.
"""

__version__ = "0.1.0"
