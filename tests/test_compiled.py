"""The optional compiled build of the hot modules (setup.py, pipeline/compiled.py):
every vendor's normalizer is among them, an editable install stays pure Python, and the
wheel ``pip install .`` builds runs them compiled with the same outputs as the source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import orjson
import pytest

from pipeline import compiled, vendors

pytestmark = [
    pytest.mark.timeout(1800),  # a wheel build with the fixture: minutes of gcc on a busy 2-core machine
    # Under pytest-xdist, one process builds the compiled wheel for every test that uses it:
    # spread over two processes, each built its own (CI: 174 and 172 s of setup side by side).
    pytest.mark.xdist_group("wheel"),
]

ROOT = Path(__file__).resolve().parents[1]
DIGEST = ROOT / "tests" / "support" / "core_digest.py"


def test_every_vendor_normalizer_is_a_hot_module():
    names = {name for name, _path in compiled.hot_modules(str(ROOT))}
    assert {f"pipeline.vendors.{vendor}.normalize" for vendor in vendors.VENDOR_NAMES} <= names
    assert {"pipeline.lifecycle", "pipeline.stream.core", "pipeline.model"} <= names
    assert all((ROOT / path).is_file() for _name, path in compiled.hot_modules(str(ROOT)))


def test_the_test_run_uses_the_source_tree_uncompiled():
    """The tests run on the editable install: a compiled module there would hide edits."""
    assert not any(compiled.compiled().values())
    assert compiled.summary().startswith("hot modules pure Python: 0 of")
    assert not list((ROOT / "pipeline").rglob("*.so"))


def _can_compile() -> str | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h)"
    return None


def _digest(pythonpath: Path, docs: int = 3000, bad: int = 1200) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run([sys.executable, "-P", str(DIGEST), str(docs), str(bad)], env=env, cwd=pythonpath,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.splitlines()[-1])


def _wheel(work: Path, name: str, **env: str) -> Path:
    """The package as ``pip install .`` builds it (an isolated build, setuptools and Cython
    from the index) from a copy of the sources in ``work/source`` (made once: a second build
    there finds the first one's ``build/``), unpacked into ``work/<name>`` for PYTHONPATH."""
    source = work / "source"  # a copy, so the build leaves nothing in the repository
    if not source.exists():
        source.mkdir(parents=True)
        for file in ("pyproject.toml", "setup.py", "README.md"):
            shutil.copy(ROOT / file, source / file)
        for folder in ("pipeline", "topics"):
            shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / f"dist-{name}"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)],
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "JOBSTREAM_PURE_PYTHON": "", **env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = dist.glob("jobstream-*.whl")
    site = work / name
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _summary(site: Path) -> str:
    checked = subprocess.run(
        [sys.executable, "-P", "-c", "from pipeline import compiled; print(compiled.summary())"],
        env={**os.environ, "PYTHONPATH": str(site)}, cwd=site, capture_output=True, text=True, timeout=300,
    )
    assert checked.returncode == 0, checked.stderr
    return checked.stdout.strip()


@pytest.fixture(scope="module")
def compiled_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The work folder of a compiled wheel build (its unpacked wheel in ``compiled/``)."""
    reason = _can_compile()
    if reason:
        pytest.skip(f"the compiled build needs a C toolchain: {reason}")
    work = tmp_path_factory.mktemp("compiled")
    _wheel(work, "compiled")
    return work


@pytest.fixture(scope="module")
def compiled_wheel(compiled_build: Path) -> Path:
    return compiled_build / "compiled"


@pytest.fixture(scope="module")
def compilerless_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build where the C compiler fails (``CC=false``): as on a machine without one."""
    return _wheel(tmp_path_factory.mktemp("compilerless"), "site", CC="false", LDSHARED="false")


def test_without_a_compiler_the_wheel_installs_pure_python(compilerless_wheel):
    """Every hot module is skipped with a warning; the package installs and runs."""
    assert not list(compilerless_wheel.rglob("*.so"))
    assert _summary(compilerless_wheel).startswith("hot modules pure Python: 0 of")


def test_a_pure_build_after_a_compiled_one_ships_no_compiled_module(compiled_build):
    """JOBSTREAM_PURE_PYTHON=1 in the same source tree: the first build's compiled modules
    stay in its build/ folder and were installed beside the .py files, shadowing them."""
    site = _wheel(compiled_build, "pure", JOBSTREAM_PURE_PYTHON="1")
    assert not list(site.rglob("*.so"))
    assert _summary(site).startswith("hot modules pure Python: 0 of")


def test_the_wheel_runs_the_hot_modules_compiled_with_the_sources_outputs(compiled_wheel):
    built = _digest(compiled_wheel)
    source = _digest(ROOT)
    assert all(built["compiled"].values()) and set(built["compiled"]) == set(source["compiled"])
    assert not any(source["compiled"].values())
    assert built["outputs"] > 5_000 and built["writes"] > 500
    assert built == {**source, "compiled": built["compiled"]}


def test_the_wheel_carries_every_data_file_of_the_source(compilerless_wheel):
    """What the code reads at run time (samples, topic files, rules) ships in the wheel:
    a vendor folder's own samples were missing from it once (the chaos run reads them)."""
    listed = subprocess.run(["git", "ls-files", "pipeline", "topics"], cwd=ROOT, capture_output=True, text=True) \
        if shutil.which("git") else None
    if listed is None or listed.returncode != 0:
        pytest.skip("needs git and a git checkout: which files are the source's is what git tracks")
    data = {Path(path) for path in listed.stdout.split() if Path(path).suffix != ".py"}
    assert data, "git tracks no data file under pipeline/ or topics/"
    shipped = {path.relative_to(compilerless_wheel) for path in compilerless_wheel.rglob("*") if path.is_file()}
    expected = {Path("pipeline/topics") / path.relative_to("topics") if path.parts[0] == "topics" else path
                for path in data}
    assert not expected - shipped, sorted(map(str, expected - shipped))
