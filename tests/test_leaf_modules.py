"""``mirrorhall.streams`` and ``mirrorhall.raykit`` are leaves every layer may import: importing
them imports no other mirrorhall module and no Ray, and changes no environment variable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHECK = """
import json, os, sys
before = dict(os.environ)
import {module}
print(json.dumps({{
    "mirrorhall": sorted(m for m in sys.modules if m.startswith("mirrorhall.") and m != "{module}"),
    "ray": "ray" in sys.modules,
    "env_changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
}}))
"""


@pytest.mark.parametrize("module", ["mirrorhall.streams", "mirrorhall.raykit"])
def test_importing_a_leaf_module_does_nothing_else(module):
    out = subprocess.run([sys.executable, "-c", CHECK.format(module=module)], capture_output=True,
                         text=True, check=True, timeout=120)
    seen = json.loads(out.stdout)
    assert seen == {"mirrorhall": [], "ray": False, "env_changed": []}, seen
