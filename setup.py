"""Builds kerasformer.words' compiled kernels (everything else is in pyproject.toml).

The extension is optional: without a C compiler the install still succeeds and
kerasformer.words runs its numpy fallback (same results, slower)."""
import sys

from setuptools import Extension, setup

setup(ext_modules=[Extension("kerasformer.words._native", ["kerasformer/words/_native.c"], optional=True,
                             extra_compile_args=[] if sys.platform == "win32" else ["-O3"])])
