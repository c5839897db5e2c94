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


def _wheel(work: Path, **env: str) -> Path:
    """The package as ``pip install .`` builds it (an isolated build, Cython from the
    index), unpacked into a directory to put on PYTHONPATH."""
    source = work / "source"  # a copy, so the build leaves nothing in the repository
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("pipeline", "topics"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work / "dist"), str(source)],
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "JOBSTREAM_PURE_PYTHON": "", **env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (work / "dist").glob("jobstream-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


@pytest.fixture(scope="module")
def compiled_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _can_compile()
    if reason:
        pytest.skip(f"the compiled build needs a C toolchain: {reason}")
    return _wheel(tmp_path_factory.mktemp("wheel"))


def test_without_a_compiler_the_wheel_installs_pure_python(tmp_path):
    """No C compiler (``CC=false``): every hot module is skipped with a warning and the
    package installs and runs as pure Python."""
    site = _wheel(tmp_path, CC="false", LDSHARED="false")
    assert not list(site.rglob("*.so"))
    checked = subprocess.run(
        [sys.executable, "-P", "-c", "from pipeline import compiled; print(compiled.summary())"],
        env={**os.environ, "PYTHONPATH": str(site)}, cwd=site, capture_output=True, text=True, timeout=120,
    )
    assert checked.returncode == 0 and checked.stdout.startswith("hot modules pure Python: 0 of"), checked.stderr


def test_the_wheel_runs_the_hot_modules_compiled_with_the_sources_outputs(compiled_wheel):
    built = _digest(compiled_wheel)
    source = _digest(ROOT)
    assert all(built["compiled"].values()) and set(built["compiled"]) == set(source["compiled"])
    assert not any(source["compiled"].values())
    assert built["outputs"] > 5_000 and built["writes"] > 500
    assert built == {**source, "compiled": built["compiled"]}


def test_the_wheel_carries_every_data_file_of_the_source(compiled_wheel):
    """What the code reads at run time (samples, topic files, rules) ships in the wheel:
    a vendor folder's own samples were missing from it once (the chaos run reads them)."""
    data = {path.relative_to(ROOT) for folder in ("pipeline", "topics") for path in (ROOT / folder).rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc", ".so", ".c") and "__pycache__" not in path.parts}
    shipped = {path.relative_to(compiled_wheel) for path in compiled_wheel.rglob("*") if path.is_file()}
    topics = {Path("pipeline/topics") / path.relative_to("topics") for path in data if path.parts[0] == "topics"}
    missing = {path for path in data if path.parts[0] == "pipeline"} - shipped | (topics - shipped)
    assert not missing
