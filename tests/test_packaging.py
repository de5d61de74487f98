"""The wheel holds every code folder under the one import name and the reference checkpoint;
importing stays light; installed alone in a fresh venv, the command runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# on-disk folder -> its package inside the wheel (pyproject's package-dir)
FOLDERS = {"mirrorhall": "mirrorhall", "envs": "mirrorhall/envs", "agents": "mirrorhall/agents",
           "imitation": "mirrorhall/imitation", "analysis": "mirrorhall/analysis",
           "checkpoints": "mirrorhall/checkpoints"}


def source_files() -> list[str]:
    """The repo's files without ignored junk: tracked files plus untracked, non-ignored ones."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):  # no git or no work tree: copy minus junk
        skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "out", "runs"}
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
                and not any(part.endswith(".egg-info") for part in p.parts)]


def py_files_on_disk() -> list[Path]:
    return sorted(p.relative_to(ROOT) for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[Path]]:
    """(the wheel, the .py files that were on disk when its sources were copied)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist = tmp / "src", tmp / "dist"
    on_disk = py_files_on_disk()  # a snapshot: others may add files while the suite runs
    for rel in source_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    assert (src / "pyproject.toml").is_file()
    try:
        import build  # noqa: F401

        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
               "--outdir", str(dist), str(src)]
    except ImportError:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wheels = list(dist.glob("mirrorhall-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], on_disk


@pytest.fixture(scope="module")
def wheel(built) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_the_core_modules(names):
    required = ["mirrorhall/__init__.py", "mirrorhall/cli.py", "mirrorhall/commands/__init__.py",
                "mirrorhall/commands/options.py", "mirrorhall/envs/__init__.py",
                "mirrorhall/envs/core.py", "mirrorhall/envs/mirrorhall_v0.py",
                "mirrorhall/imitation/__init__.py", "mirrorhall/analysis/__init__.py",
                "mirrorhall/agents/__init__.py"]
    required += [f"mirrorhall/agents/{p.name}" for p in (ROOT / "agents").glob("*.py")]
    assert len(required) > 10
    missing = [r for r in required if r not in names]
    assert not missing, missing


def test_every_python_file_on_disk_is_in_the_wheel(built, names):
    files = built[1]
    assert len(files) >= 15
    expected = {f"{FOLDERS[p.parts[0]]}/{'/'.join(p.parts[1:])}" for p in files}
    missing = sorted(expected - names)
    assert not missing, f"on disk but not in the wheel (nested packages not listed?): {missing}"
    # and nothing else: no bare top-level packages, no tests
    code = {n for n in names if n.endswith(".py")}
    assert all(n.startswith("mirrorhall/") for n in code), sorted(code)
    assert code == expected, sorted(code ^ expected)


def test_wheel_ships_the_reference_checkpoint_only(names):
    shipped = sorted(n for n in names if n.startswith("mirrorhall/checkpoints/") and not n.endswith(".py"))
    assert shipped == ["mirrorhall/checkpoints/reference/checkpoint.json",
                       "mirrorhall/checkpoints/reference/model.safetensors"]


def test_wheel_metadata_and_entry_point(wheel, names):
    dist_info = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert len(dist_info) == 1
    with zipfile.ZipFile(wheel) as zf:
        entry = zf.read(dist_info[0]).decode()
        top = zf.read(dist_info[0].replace("entry_points.txt", "top_level.txt")).decode().split()
    assert "mirrorhall = mirrorhall.cli:main" in entry
    assert top == ["mirrorhall"]


def test_the_wheel_imports_on_its_own(wheel, tmp_path):
    """Installed from the wheel alone (not the editable checkout), every module imports."""
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                          "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    code = (
        "import importlib, pathlib, sys\n"
        "import mirrorhall\n"
        f"root = pathlib.Path({str(target)!r})\n"
        "assert pathlib.Path(mirrorhall.__file__).is_relative_to(root), mirrorhall.__file__\n"
        "for mod in ('mirrorhall.cli', 'mirrorhall.envs.core', 'mirrorhall.envs.mirrorhall_v0',\n"
        "            'mirrorhall.agents.cast', 'mirrorhall.agents.scene', 'mirrorhall.agents.bayes'):\n"
        "    m = importlib.import_module(mod)\n"
        "    assert pathlib.Path(m.__file__).is_relative_to(root), m.__file__\n"
        "from mirrorhall.envs import mirrorhall_v0\n"
        "env = mirrorhall_v0.parallel_env(n_agents=3)\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(len(obs))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


@pytest.mark.parametrize("modules", [
    ["mirrorhall"],
    ["mirrorhall", "mirrorhall.envs", "mirrorhall.envs.core", "mirrorhall.envs.mirrorhall_v0",
     "mirrorhall.agents.personas", "mirrorhall.agents.bayes", "mirrorhall.agents.cast",
     "mirrorhall.agents.populations", "mirrorhall.agents.scene", "mirrorhall.cli"],
])
def test_importing_mirrorhall_does_not_import_torch_or_ray(modules, tmp_path):
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_code_folders_are_not_importable_under_bare_names(tmp_path):
    """From a neutral directory only ``mirrorhall.*`` resolves to this project's folders."""
    code = (
        "import importlib.util, pathlib\n"
        f"root = pathlib.Path({str(ROOT)!r})\n"
        "for name in ('envs', 'agents', 'imitation', 'analysis'):\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    if spec is not None and spec.origin:\n"
        "        assert not pathlib.Path(spec.origin).is_relative_to(root), (name, spec.origin)\n"
        "    spec = importlib.util.find_spec('mirrorhall.' + name)\n"
        "    assert pathlib.Path(spec.origin).resolve() == (root / name / '__init__.py').resolve(), spec.origin\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True, timeout=60)
    return Path(out.stdout.strip())


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_the_commands_and_loads_the_shipped_checkpoint(wheel, tmp_path):
    """pip install of the wheel alone into a new venv outside the repository; the dependencies come
    from this test venv's site-packages through a .pth file (a path entry only: this venv's own .pth
    files, such as the editable install's finder, are not run there)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    target = site_packages(python)
    (target / "_mirrorhall_test_deps.pth").write_text(f"{site_packages(Path(sys.executable))}\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    work = tmp_path / "elsewhere"  # outside the repository: nothing can come from the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    exe = str(venv / "bin" / "mirrorhall")

    def run(*args, timeout=180):
        return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=work, env=env)

    r = run(exe, "demo", "--help")
    assert r.returncode == 0, r.stderr
    assert "reference checkpoint shipped with mirrorhall" in " ".join(r.stdout.split())
    r = run(exe, "run", "--agents", 3, "--steps", 5, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sum(line.startswith("agent_") for line in r.stdout.splitlines()) == 3
    assert "5 steps" in r.stdout
    code = (
        "import pathlib, sys\n"
        "import mirrorhall\n"
        "from mirrorhall.checkpoints import reference_checkpoint\n"
        "from mirrorhall.imitation.checkpoint import load_model\n"
        f"root = pathlib.Path({str(target)!r}).resolve()\n"
        "ref = reference_checkpoint()\n"
        "assert pathlib.Path(mirrorhall.__file__).resolve().is_relative_to(root), mirrorhall.__file__\n"
        "assert ref.is_relative_to(root), ref\n"
        "model, tokenizer, meta = load_model(ref)\n"
        "print(model.config.n_colors, len(tokenizer) > 0)\n"
    )
    r = run(python, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4", "True"]
    assert not any(ROOT.resolve() in Path(p).resolve().parents for p in [venv, work])
