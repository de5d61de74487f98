"""The ``mirrorhall`` commands: one frozen config dataclass and one function per command.

Each command is a config class and a function; the parser of a command is generated from
its config class (``options``), and its module is imported only when the command is used, so
that ``mirrorhall run`` never imports torch. A command function takes its config object and
returns the exit code; ``demo`` calls ``act`` and ``probe`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand: where its config and function live, and its help texts."""

    load: Callable[[], tuple]
    """Imports the command's module: (config class, ``function(config) -> exit code``,
    ``{field: Opt}`` settings of library config fields)."""
    summary: str
    """One line for ``mirrorhall --help``."""
    description: str = ""
    """The paragraph of ``mirrorhall COMMAND --help`` (default: the summary)."""


# Each loader imports its module only when the command is used.


def _run():
    from mirrorhall.commands import run

    return run.RunConfig, run.run, {}


def _generate():
    from mirrorhall.commands import generate

    return generate.GenerateCommand, generate.generate, generate.OPTIONS


def _train():
    from mirrorhall.commands import train

    return train.TrainCommand, train.train, train.OPTIONS


def _act():
    from mirrorhall.commands import act

    return act.ActConfig, act.act, {}


def _probe():
    from mirrorhall.commands import probe

    return probe.ProbeConfig, probe.probe, {}


def _report():
    from mirrorhall.commands import probe

    return probe.ReportConfig, probe.report, {}


def _export():
    from mirrorhall.commands import export

    return export.ExportConfig, export.export, {}


def _demo():
    from mirrorhall.commands import demo

    return demo.DemoConfig, demo.demo, {}


def _compare_direct():
    from mirrorhall.commands import compare_direct

    return compare_direct.CompareDirectConfig, compare_direct.compare_direct, {}


def _recipe():
    from mirrorhall.commands import recipe

    return recipe.RecipeConfig, recipe.recipe, {}


def _diversity():
    from mirrorhall.commands import diversity

    return diversity.DiversityConfig, diversity.diversity, {}


def _prompts():
    from mirrorhall.commands import prompts

    return prompts.PromptsConfig, prompts.prompts, {}


COMMANDS = {
    "run": Command(
        _run, "run a scene of scripted personas and summarise it",
        "Run a scene of scripted personas, print a per-agent table, optionally write an animation."),
    "generate": Command(
        _generate, "generate a hindsight-labelled dataset (Parquet shards)",
        "Run scenes from a population and label every sampled (agent, time, prompt) with the exact "
        "distribution asked for."),
    "train": Command(
        _train, "train the shared multi-policy model on a dataset",
        "Maximum likelihood on the soft labels of a generated dataset; one local process by "
        "default, Ray Train with --ray."),
    "act": Command(
        _act, "a scene where chosen agents are driven by a trained model",
        "Run a scene of scripted personas in which the agents named by --prompt are driven by the "
        "model, and summarise it."),
    "probe": Command(
        _probe, "run a probe (or all) on a checkpoint: JSON + plot per probe",
        "Measure the model against the Bayes-optimal observer and naive baselines on held-out seeds."),
    "report": Command(
        _report, "write DIR/report.md from the probe results in DIR"),
    "recipe": Command(
        _recipe, "a whole recipe from nothing: generate, train, export, probe, each stage timed",
        "Run a named recipe end to end in an empty folder: generate its dataset, train, export the final "
        "checkpoint and run the imitate probe on it; print each stage's time and the fraction of "
        "attainable information at K = 10. `reference` makes checkpoints/reference; `tiny` runs in seconds."),
    "diversity": Command(
        _diversity, "train on 0, 1, 2, ... persona families; probe one never seen (the diversity curve)",
        "The diversity experiment: for a held-out persona family, train the same model at an equal sample "
        "budget on lab plus 0, 1, 2, ... of the other families, and measure each point's fraction of "
        "attainable information on the held-out family at K = 5, 10, 20 (with intervals) beside its "
        "in-family figures. Finished points are kept, so a stopped run resumes."),
    "prompts": Command(
        _prompts, "print the prompt language: meaning kinds, example wordings, how to write ids",
        "Print the prompt language the model reads: each meaning kind with its canonical wording and "
        "one example per training family, how to write agent ids (digits or words), the optional "
        "words around a prompt, and the held-out families' names."),
    "export": Command(
        _export, "copy a checkpoint without optimizer state (for sharing)"),
    "demo": Command(
        _demo, "the main demo: the reference model in a crowd, all probes, a report",
        "A crowd scene where the reference model acts as itself, then as another agent, then as the "
        "agent imitating it; every probe at demo scale; a markdown report and an animation."),
    "compare-direct": Command(
        _compare_direct, "PPO on log pi_test(a|s) vs the model watching pi_test: CE vs env steps",
        "Direct optimisation vs generalisation + inference: for a few trait personas pi_test, the "
        "cross-entropy against pi_test in held-out situations of (a) PPO trained online with reward "
        "log pi_test(a|s) and (b) the shared model told 'behave as agent k' after watching pi_test "
        "for K steps, as a function of environment steps. Writes DIR/compare_direct.json, .png and .md."),
}
