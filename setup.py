"""Package discovery, the one thing pyproject.toml cannot say: every ``pipeline*`` package
found (a new vendor package included without an edit) plus ``pipeline.topics``, which lives
in ``topics/`` (pyproject.toml's package-dir maps it). Everything else is in pyproject.toml.

And the optional compiled build of the worker's hot modules (``pipeline/compiled.py``
lists them): a wheel build (``pip install .``) compiles each with Cython, as it is; a
module that cannot be compiled (no C compiler, no Python headers, Cython refuses it) is
installed as pure Python, with a warning, and the package works the same. Editable
installs stay pure Python: a compiled module in the source tree would shadow every later
edit of its .py file. ``JOBSTREAM_PURE_PYTHON=1`` skips compiling.
"""

import os
import runpy
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
HOT_MODULES = runpy.run_path(os.path.join(HERE, "pipeline", "compiled.py"))["hot_modules"](HERE)


class OptionalBuildExt(build_ext):
    """Cythonize and compile the hot modules at build time, or leave them pure Python."""

    def finalize_options(self):
        super().finalize_options()
        reason = self._pure_reason()
        if reason:
            print(f"jobstream: hot modules stay pure Python ({reason})", file=sys.stderr)
            self.extensions = []

    def run(self):
        self._remove_earlier_builds()
        if not self.extensions:
            return
        from Cython.Build import cythonize

        try:
            translated = cythonize(
                self.extensions, build_dir=os.path.join(self.build_temp, "cython"), quiet=True,
                exclude_failures=True,  # a module Cython refuses stays pure Python, the others compile
                # Plain Python semantics: annotations are not enforced as C types.
                compiler_directives={"language_level": 3, "annotation_typing": False},
            )
        except Exception as exc:  # noqa: BLE001 - compiling is an optimisation, never a failed install
            print(f"jobstream: hot modules stay pure Python (Cython failed: {exc})", file=sys.stderr)
            self.extensions = []
            return
        sources = {ext.name: ext.sources for ext in translated}
        kept = []
        for ext in self.extensions:  # the C files, on the Extensions setuptools already prepared
            if ext.name in sources:
                ext.sources = sources[ext.name]
                kept.append(ext)
            else:
                print(f"jobstream: {ext.name} stays pure Python (Cython could not translate it)", file=sys.stderr)
        self.extensions = kept
        if not self.parallel:
            self.parallel = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        super().run()

    def _remove_earlier_builds(self):
        """A compiled module an earlier build left in ``build/`` would be installed beside
        the .py and shadow it: gone before anything is compiled (or nothing is)."""
        for ext in self.distribution.ext_modules or ():
            earlier = os.path.join(self.build_lib, self.get_ext_filename(ext.name))
            if os.path.exists(earlier):
                os.remove(earlier)

    def _pure_reason(self):
        if os.environ.get("JOBSTREAM_PURE_PYTHON", "") not in ("", "0"):
            return "JOBSTREAM_PURE_PYTHON is set"
        if self.inplace or getattr(self, "editable_mode", False):
            return "an editable install"
        try:
            import Cython.Build  # noqa: F401
        except ImportError:
            return "Cython is not installed"
        return None


setup(
    packages=[*find_packages(include=["pipeline", "pipeline.*"]), "pipeline.topics"],
    # optional: a module whose compilation fails is skipped, its .py installed as it is.
    ext_modules=[Extension(name, [path], optional=True) for name, path in HOT_MODULES],
    cmdclass={"build_ext": OptionalBuildExt},
)
