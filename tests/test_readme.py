"""The README's Python tour runs as written, in order, and its model-driven loop acts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "the tour lost its code"
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), scope)  # noqa: S102 (our own README)
    assert scope["episode"].probs.shape == (50, 1, 3, 5)
    probs = scope["probs"]
    assert probs.shape == (8, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-9)
    assert np.abs(probs - 0.2).max() > 0.02, "the model's distributions are uniform"
