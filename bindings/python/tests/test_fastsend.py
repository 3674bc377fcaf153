"""libmetricq._fastsend, the optional C extension behind the per-point send:
in use when built, the same results as the ctypes call it replaces, the GIL
released while it waits, and a package that installs and works without it.
(The error tests of test_errors.py run on both send paths: send_path.)"""

import ctypes
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

import libmetricq
from conftest import EXPECT_FASTSEND, PACKAGE_DIR, require_fastsend
from libmetricq import _lib, source


class Real(float):
    pass


def test_fast_send_in_use():
    require_fastsend()
    from libmetricq import _fastsend

    assert source._send is _lib.send is _fastsend.send
    assert source._metric_send is _lib.metric_send is _fastsend.metric_send
    # The copy built in place (make python) in the package under test.
    assert Path(_fastsend.__file__).parent == Path(libmetricq.__file__).parent


# Calls on a NULL handle (the library answers MQ_ERR_INVALID), with the
# arguments the binding passes and others that the extension hands on to
# ctypes: the outcome must be that of the ctypes call.
INVALID = ("returned", _lib.ERR_INVALID)
CALLS = [
    ((0, b"m", 1, 1.0, 60.0), INVALID),
    ((None, b"m", 1, 1.0, 60.0), INVALID),
    ((0, b"m", -(1 << 63), 7, 1), INVALID),
    ((0, b"m", (1 << 63) - 1, Real(2.5), Real(1.0)), INVALID),
    ((0, b"m", True, True, True), INVALID),
    ((0, b"m", 1 << 64, 1.0, 1.0), INVALID),  # ctypes wraps it (send() refuses it before)
    ((1 << 70, b"m", 1, 1.0, 1.0), INVALID),  # likewise
    ((0, b"m", 1, 1.0, 1.0, 1), INVALID),
    ((0, b"m", 1.5, 1.0, 1.0), ctypes.ArgumentError),
    ((0, b"m", 1, "one", 1.0), ctypes.ArgumentError),
    ((0, b"m", 1, 1 << 1100, 1.0), ctypes.ArgumentError),
    ((0, b"m", 1, 1.0, None), ctypes.ArgumentError),
    ((0, "m", 1, 1.0, 1.0), ctypes.ArgumentError),
    ((0, bytearray(b"m"), 1, 1.0, 1.0), ctypes.ArgumentError),
    ((0, b"m", 1, 1.0), TypeError),
    ((), TypeError),
]


# The same for metric_send (mq_metric_send) on handles the library refuses
# (0 and a made-up one), but a time outside int64, which ctypes would wrap
# and both refuse with OverflowError (_lib.ctypes_metric_send checks it).
METRIC_CALLS = [
    ((0, 1, 1.0, 60.0), INVALID),
    ((None, 1, 1.0, 60.0), INVALID),
    ((12345, 1, 1.0, 1.0), INVALID),
    ((0, -(1 << 63), 7, 1), INVALID),
    ((0, True, True, True), INVALID),
    ((0, 1 << 63, 1.0, 1.0), OverflowError),
    ((0, -(1 << 63) - 1, 1.0, 1.0), OverflowError),
    ((0, 1.5, 1.0, 1.0), ctypes.ArgumentError),
    ((0, 1, "one", 1.0), ctypes.ArgumentError),
    ((0, 1, 1.0, None), ctypes.ArgumentError),
]
CASES = [("send", "mq_source_send", *c) for c in CALLS] + [("metric_send", "ctypes_metric_send", *c) for c in METRIC_CALLS]


@pytest.mark.parametrize("fast_name, ctypes_name, args, expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_same_as_ctypes(fast_name, ctypes_name, args, expected):
    require_fastsend()
    from libmetricq import _fastsend

    def outcome(fn):
        try:
            return "returned", fn(*args)
        except Exception as e:
            return type(e), str(e)

    fast = outcome(getattr(_fastsend, fast_name))
    assert fast == outcome(getattr(_lib, ctypes_name))
    assert fast == expected if isinstance(expected, tuple) else fast[0] is expected


def test_blocked_send_releases_the_gil(send_path, make_source, metric_prefix):
    m = metric_prefix + "a"
    src = make_source(chunk_size=None, max_buffered=1)
    src.declare_metrics([m])
    src.send(m, 1, 1.0)  # the buffer is full now
    started = []
    outcome = []

    def blocked_send():
        started.append(time.monotonic())
        try:
            src.send(m, 2, 2.0, timeout=2)  # an int: converted as ctypes does
        except Exception as e:
            outcome.append((e, time.monotonic() - started[0]))

    # The library's log lines to stderr: the Python log handler, called
    # from the waiting send, would let this thread take the GIL.
    libmetricq.route_library_logs(False)
    try:
        worker = threading.Thread(target=blocked_send)
        worker.start()
        # This thread runs Python code while the worker waits in the library
        # (2 s) only if the worker released the GIL; else once the wait is over.
        while src.stats["buffer_full_waits"] == 0:
            assert worker.is_alive(), f"the send did not wait for buffer space: {outcome}"
            time.sleep(0.001)
        seen = time.monotonic() - started[0]
        worker.join(15)
    finally:
        libmetricq.route_library_logs(True)
    assert seen < 1.0, f"this thread ran only {seen:.2f} s after the send began to wait"
    ((error, elapsed),) = outcome
    assert isinstance(error, libmetricq.Timeout) and elapsed >= 1.9, (error, elapsed)
    assert src.stats["points_accepted"] == 1


def test_works_without_the_extension(tmp_path):
    code = (
        "import sys; sys.modules['libmetricq._fastsend'] = None\n"  # as if not built
        "import libmetricq\n"
        "from libmetricq import _lib, source\n"
        "assert _lib.FAST_SEND is False and source._send is _lib.mq_source_send is _lib.send\n"
        "assert source._send(0, b'm', 1, 1.0, 1.0) == _lib.ERR_INVALID\n"
        "print('ctypes send')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ctypes send\n"


def _wheel(tmp_path, env=None):
    """Builds the wheel of a copy of bindings/python (as pip install does)
    and returns (its file name, the names of its files)."""
    src = tmp_path / "src"
    shutil.copytree(
        PACKAGE_DIR, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "_fastsend.*.so", "tests")
    )
    out = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out), str(src)],
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        return wheel.name, z.namelist()


def _has_extension(files):
    return any(f.startswith("libmetricq/_fastsend.") and f.endswith(".so") for f in files)


def test_wheel_with_extension(tmp_path):
    name, files = _wheel(tmp_path)
    if not _has_extension(files):
        assert not EXPECT_FASTSEND, f"the wheel lacks libmetricq._fastsend: {files}"
        pytest.skip("libmetricq._fastsend cannot be compiled here")
    # A binary for this CPython only.
    impl = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert name.startswith(f"libmetricq-0.1.0-{impl}-{impl}-linux_"), name
    assert "libmetricq/_fastsend.c" not in files


def test_wheel_without_compiler(tmp_path):
    bundled = (PACKAGE_DIR / "libmetricq" / "_lib" / "libmetricq.so.0").exists()
    name, files = _wheel(tmp_path, env={"CC": "false"})
    assert not _has_extension(files)
    assert "libmetricq/source.py" in files
    assert ("libmetricq/_lib/libmetricq.so.0" in files) == bundled
    tag = "py3-none-linux_" if bundled else "py3-none-any"
    assert name.startswith(f"libmetricq-0.1.0-{tag}"), name
