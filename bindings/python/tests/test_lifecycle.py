"""Garbage collection, interpreter exit, and the library's log lines in
Python's logging."""

import gc
import logging
import os
import subprocess
import sys
import textwrap
import weakref

import libmetricq
from conftest import PACKAGE_DIR


def test_garbage_collected_source_is_stopped(make_source, manager, url, token, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)

    def use():
        source = libmetricq.SynchronousSource(token, url, timeout=20, chunk_size=None)
        source.declare_metrics([m])
        source.send(m, 1, 1.0)
        return weakref.ref(source), source._finalizer

    ref, finalizer = use()
    gc.collect()
    assert ref() is None and not finalizer.alive
    # freeing stopped it, flushing the point
    assert sink.collect(1) == [(m, 1, 1.0)]


def test_exit_without_stop_flushes(manager, url, token, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    script = textwrap.dedent(
        f"""
        import logging, threading
        logging.basicConfig(level=logging.DEBUG)
        import libmetricq
        libmetricq.set_log_level("DEBUG")
        source = libmetricq.SynchronousSource({token!r}, {url!r}, timeout=20, chunk_size=None, max_buffered=10)
        source.declare_metrics([{m!r}])
        for i in range(10):
            source.send({m!r}, i + 1, float(i))
        # the buffer is full: the library logs a warning, the send fails
        source.send({m!r}, 11, 0.0, block=False)
        # a thread still sending when the interpreter exits
        def spam():
            k = 100
            while True:
                source.send({m!r}, k, 0.0, block=False)
                k += 1
        threading.Thread(target=spam, daemon=True).start()
        print("exiting", flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "exiting" in r.stdout
    assert "WARNING:libmetricq.core:buffer full" in r.stderr  # the library's line went through logging
    # at exit, the source was stopped: its 10 points were flushed
    assert sink.collect(10) == [(m, i + 1, float(i)) for i in range(10)]


def _fill_buffer(source, metric):
    source.declare_metrics([metric])
    source.send(metric, 1, 1.0)
    source.send(metric, 2, 1.0, block=False)  # buffer full: the library warns


def test_library_logs_go_to_logging(make_source, metric_prefix, caplog):
    m = metric_prefix + "a"
    _fill_buffer(make_source(chunk_size=None, max_buffered=1), m)
    core = [r for r in caplog.records if r.name == "libmetricq.core"]
    assert core and core[0].levelno == logging.WARNING and core[0].getMessage().startswith("buffer full")
    caplog.clear()
    libmetricq.set_log_level(logging.ERROR)
    try:
        _fill_buffer(make_source(chunk_size=None, max_buffered=1), m)
    finally:
        libmetricq.set_log_level(logging.WARNING)
    assert not [r for r in caplog.records if r.name == "libmetricq.core"]


def test_set_log_level_values():
    for level in (None, "debug", "INFO", logging.WARNING, logging.ERROR, logging.CRITICAL, 5):
        libmetricq.set_log_level(level)
    libmetricq.set_log_level(logging.WARNING)
    try:
        libmetricq.set_log_level("loud")
    except ValueError:
        pass
    else:
        raise AssertionError("no ValueError")


def test_route_library_logs_off_and_on():
    libmetricq.route_library_logs(False)
    libmetricq.route_library_logs(True)
