"""Build of the optional C extension ``hammer_core.data.compiled._fastprep`` (the prepare stage's hot path).

Everything else is declared in pyproject.toml. The extension is optional: when it cannot be
built (no C compiler), the install still succeeds and the prepare stage runs its pure-Python
implementation (with a warning), producing the same bytes.

A second optional extension, ``hammer_core.data.compiled._fastbpe`` (exact byte-level BPE encoding of short
ASCII strings, see hammer_core/data/compiled/fastbpe.py), is built the same way; without it, callers keep
tokenizing with Hugging Face ``tokenizers``.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extension if possible; never fail the install because of it."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # noqa: BLE001 -- compiler missing or failing: Python fallback
            self.warn(f"hammer_core.data.compiled._fastprep not built ({err}); prepare will use the Python path")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as err:  # noqa: BLE001
            self.warn(f"{ext.name} not built ({err}); prepare will use the Python path")


setup(
    ext_modules=[Extension("hammer_core.data.compiled._fastprep", ["hammer_core/data/compiled/_fastprep.c"],
                           extra_compile_args=["-O2", "-std=c11", "-fno-strict-aliasing"],
                           optional=True),
                 Extension("hammer_core.data.compiled._fastbpe", ["hammer_core/data/compiled/_fastbpe.c"],
                           extra_compile_args=["-O2", "-std=c11", "-fno-strict-aliasing"],
                           optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
