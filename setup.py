"""The optional compiled part: uqcodec._tables, the Gaussian coding-table rows in one pass.

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
available the build goes on without it and uqcodec computes the same rows with NumPy
(the same bits, about 3x slower). It is built for CPython's stable ABI (one wheel for
Python 3.11 and later) and without FMA contraction or fast-math, so that every
floating-point operation is rounded as NumPy's are (uqcodec/_tables.c).
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

STRICT_FP = {  # compiler type -> flags that keep each IEEE operation separately rounded
    "unix": ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math"],
    "mingw32": ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math"],
    "msvc": ["/O2", "/fp:precise"],
}


class StrictBuildExt(build_ext):
    def build_extensions(self):
        flags = STRICT_FP.get(self.compiler.compiler_type, [])
        for ext in self.extensions:
            ext.extra_compile_args = flags + ext.extra_compile_args
        super().build_extensions()


setup(
    ext_modules=[Extension("uqcodec._tables", ["uqcodec/_tables.c"], optional=True,
                           py_limited_api=True,
                           define_macros=[("Py_LIMITED_API", "0x030B0000")])],
    cmdclass={"build_ext": StrictBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
