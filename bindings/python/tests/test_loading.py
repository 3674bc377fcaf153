"""Finding and checking the C library: bundled copy, LIBMETRICQ_PATH (file
or directory), the version check. Each case imports the package in a fresh
interpreter, from a copy of the package made for the test."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import libmetricq
from conftest import BUILT, PACKAGE_DIR

PROBE = "import libmetricq; print(libmetricq.LIBRARY_PATH); print(libmetricq.library_version())"


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package without a bundled library."""
    dest = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR / "libmetricq", dest / "libmetricq", ignore=shutil.ignore_patterns("_lib", "__pycache__"))
    return dest


def _import(site, env_path=None, code=PROBE):
    env = {k: v for k, v in os.environ.items() if k != "LIBMETRICQ_PATH"}
    env["PYTHONPATH"] = str(site)
    env["LD_LIBRARY_PATH"] = ""
    if env_path is not None:
        env["LIBMETRICQ_PATH"] = str(env_path)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=site)


def test_version():
    assert libmetricq.library_version().startswith("libmetricq/0.")
    assert libmetricq.library_version() == "libmetricq/" + libmetricq._lib.HEADER_VERSION
    assert Path(libmetricq.LIBRARY_PATH).exists()


def test_env_directory_and_file(package_copy):
    r = _import(package_copy, BUILT.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(BUILT.parent / "libmetricq.so.0")
    r = _import(package_copy, BUILT.resolve())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(BUILT.resolve()), libmetricq.library_version()]


def test_env_bad_path(package_copy, tmp_path):
    r = _import(package_copy, tmp_path / "missing.so")
    assert r.returncode != 0 and "LIBMETRICQ_PATH" in r.stderr and "ImportError" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _import(package_copy, empty)
    assert r.returncode != 0 and "is a directory without" in r.stderr


def test_bundled_copy_wins(package_copy, tmp_path):
    (package_copy / "libmetricq" / "_lib").mkdir()
    bundled = package_copy / "libmetricq" / "_lib" / "libmetricq.so.0"
    shutil.copy(BUILT, bundled)
    r = _import(package_copy, tmp_path / "ignored.so")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(bundled)


def test_version_check_refuses_other_major(package_copy, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc) for the fake library")
    src = tmp_path / "fake.c"
    src.write_text('const char *mq_version(void) { return "libmetricq/1.0.0"; }\n')
    fake = tmp_path / "libmetricq.so.0"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(fake), str(src)], check=True)
    r = _import(package_copy, fake)
    assert r.returncode != 0
    assert "libmetricq/1.0.0" in r.stderr and "needs libmetricq/0.x" in r.stderr


def test_no_library_anywhere(package_copy):
    r = _import(package_copy, None)
    if r.returncode == 0:
        # installed system-wide: then that one was found
        assert "libmetricq" in r.stdout
    else:
        assert "cannot load the C library" in r.stderr and "LIBMETRICQ_PATH" in r.stderr
