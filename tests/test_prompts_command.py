"""``mirrorhall prompts``: the prompt language as a user reads it."""

from __future__ import annotations

from mirrorhall.cli import main
from mirrorhall.imitation.prompts import CANONICAL, Kind, families, parse_prompt


def test_prompts_prints_every_kind_examples_ids_and_held_out_families(capsys):
    assert main(["prompts"]) == 0
    out = capsys.readouterr().out
    for kind in Kind:
        assert f"\n{kind.name}: " in out
        for fam in families(kind, held_out=True):
            assert fam.name in out
    assert "'agent 3' = 'agent three'" in out and "'the agent wearing 3'" in out and "'please'" in out
    assert "canonical: behave as agent 3" in out and "canonical: behave as yourself" in out
    # every example line is a prompt of its own kind the grammar reads
    kind = None
    examples = 0
    for line in out.splitlines():
        if line.split(":")[0] in Kind.__members__:
            kind = Kind[line.split(":")[0]]
        elif kind is not None and line.startswith("  ") and not line.startswith("  held out"):
            text = line.split("canonical: ")[-1].split("  (")[0].split(" (")[0].strip()
            assert parse_prompt(text).kind == kind, line
            examples += 1
    assert examples == len(Kind) * 5  # the canonical form and four training families each
    assert CANONICAL[Kind.SECOND].replace("{k}", "3") in out


def test_prompts_one_kind_and_its_errors(capsys):
    assert main(["prompts", "--kind", "second", "--examples", "2"]) == 0
    out = capsys.readouterr().out
    assert "SECOND:" in out and "OTHER:" not in out and out.count("(second/") == 2
    assert main(["prompts", "--examples", "0"]) == 2
    err = capsys.readouterr().err
    assert "--examples must be an integer in 1..100" in err and err.count("\n") == 1
