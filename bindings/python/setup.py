"""The optional C extension and the wheel's tag; everything else is in
pyproject.toml.

libmetricq._fastsend (libmetricq/_fastsend.c) makes the per-point send
cheaper. It is optional: where it cannot be compiled (no compiler, no
Python headers) the package installs without it and sends through ctypes.

The tag follows what the wheel holds: with the extension it is built for
this CPython (cpXY-cpXY-<platform>); without it but with the C library
bundled (libmetricq/_lib, see `make python`) a Linux binary for any Python 3
(py3-none-<platform>); with neither, pure Python (py3-none-any).
"""

import os
import warnings

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.exists(os.path.join(HERE, "libmetricq", "_lib", "libmetricq.so.0"))

cmdclass = {}
try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    try:
        with warnings.catch_warnings():  # its FutureWarning: "update setuptools"
            warnings.simplefilter("ignore", FutureWarning)
            from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None

if bdist_wheel is not None:

    class Wheel(bdist_wheel):
        def get_tag(self):
            # Called after the build, when it is known whether the
            # (optional) extension was compiled.
            impl, abi, plat = super().get_tag()
            build_ext = self.get_finalized_command("build_ext")
            if any(os.path.exists(path) for path in build_ext.get_outputs()):
                return impl, abi, plat
            return "py3", "none", plat if BUNDLED else "any"

    cmdclass["bdist_wheel"] = Wheel

setup(
    cmdclass=cmdclass,
    ext_modules=[Extension("libmetricq._fastsend", ["libmetricq/_fastsend.c"], optional=True)],
)
