"""Only for the wheel's tag: with the C library bundled (libmetricq/_lib,
see `make python`) the wheel holds a Linux binary, so it is tagged
py3-none-<platform> instead of py3-none-any. Everything else is in
pyproject.toml."""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.exists(os.path.join(HERE, "libmetricq", "_lib", "libmetricq.so.0"))

cmdclass = {}
if BUNDLED:
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:  # setuptools < 70.1
        try:
            from wheel.bdist_wheel import bdist_wheel
        except ImportError:
            bdist_wheel = None

    if bdist_wheel is not None:

        class PlatformWheel(bdist_wheel):
            def finalize_options(self):
                super().finalize_options()
                self.root_is_pure = False

            def get_tag(self):
                _, _, plat = super().get_tag()
                return "py3", "none", plat

        cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass)
