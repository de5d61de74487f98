"""The notebooks in notebooks/: committed without outputs, and each runs top to bottom.

Each notebook is executed with nbclient in a "python3" kernel, from the notebooks folder, with
``MIRRORHALL_NB_SMALL=1`` (small parameters: the four together take well under three minutes).
Notebooks that read the reference checkpoint are skipped only when
``checkpoints/reference/checkpoint.json`` is missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")
pytest.importorskip("ipykernel", reason="the notebooks extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = ROOT / "checkpoints" / "reference" / "checkpoint.json"
KERNEL = "python3"

# notebook -> whether it needs the reference checkpoint
CASES = {
    "01_world_and_personas.ipynb": False,
    "02_training.ipynb": True,
    "03_imitation_probes.ipynb": True,
    "04_being_imitated.ipynb": True,
    "05_false_belief.ipynb": True,
    "06_diversity.ipynb": False,
}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the kernels: small parameters, and a "python3" kernelspec for this Python.

    A user-level "python3" spec may point at another interpreter, so a spec running
    ``sys.executable`` is written to a temporary folder put first on JUPYTER_PATH (ipykernel's own
    spec in ``sys.prefix/share/jupyter/kernels`` would also do, where nothing shadows it).
    """
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    saved = {k: os.environ.get(k) for k in ("MIRRORHALL_NB_SMALL", "JUPYTER_PATH")}
    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, prefix=str(prefix))
    share = str(prefix / "share" / "jupyter")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [share, saved["JUPYTER_PATH"]]))
    os.environ["MIRRORHALL_NB_SMALL"] = "1"  # the kernels inherit the environment
    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable, spec.argv
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for cell in code:
        assert cell.outputs == [], f"{name}: a code cell has outputs:\n{cell.source[:200]}"
        assert cell.execution_count is None, f"{name}: a code cell has an execution count"
    assert nb.cells[0].cell_type == "markdown", f"{name} should open with a markdown cell"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "SMALL" in tagged[0].source, f"{name} needs one 'parameters' cell"


@pytest.mark.slow  # a kernel per notebook
@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs(name, kernel_env):
    if CASES[name] and not REFERENCE.exists():
        pytest.skip(f"{name} needs the reference checkpoint; {REFERENCE} is missing")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{name} failed:\n{err}", pytrace=False)
    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
