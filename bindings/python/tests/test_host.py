"""The library inside a Python host: Ctrl-C still raises KeyboardInterrupt,
the host's own signal handlers still run, and a forked child gets a clear
error instead of a hang (the C library's fork guard, seen from Python)."""

import os
import subprocess
import sys
import textwrap

from conftest import PACKAGE_DIR


def _run(script):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=60)


def test_ctrl_c_and_host_signal_handlers(manager, url, token, metric_prefix):
    m = metric_prefix + "a"
    r = _run(
        f"""
        import os, signal, threading
        import libmetricq
        got = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append("usr1"))  # installed before the library runs
        source = libmetricq.SynchronousSource({token!r}, {url!r}, timeout=20)
        source.declare_metrics([{m!r}])
        signal.signal(signal.SIGUSR2, lambda *_: got.append("usr2"))  # and after
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            print("no KeyboardInterrupt")
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        source.send({m!r}, 1, 1.0)  # the library still works
        source.stop()
        print(",".join(got))
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["KeyboardInterrupt", "usr1,usr2"], r.stdout + r.stderr[-2000:]


def test_forked_child_gets_an_error_not_a_hang(manager, url, token, metric_prefix):
    m = metric_prefix + "a"
    r = _run(
        f"""
        import os, sys
        import libmetricq
        source = libmetricq.SynchronousSource({token!r}, {url!r}, timeout=20, raise_errors=True)
        source.declare_metrics([{m!r}])
        pid = os.fork()
        if pid == 0:
            try:
                source.send({m!r}, 1, 1.0)
                print("child: accepted", flush=True)
            except libmetricq.MetricQError as e:
                print("child: refused:", e, flush=True)
            try:
                libmetricq.SynchronousSource("other", {url!r}, timeout=5)
            except libmetricq.MetricQError as e:
                print("child: new refused", flush=True)
            sys.exit(0)  # a normal exit runs the finalizers: they must not hang either
        _, status = os.waitpid(pid, 0)
        print("parent: child exited", os.waitstatus_to_exitcode(status), flush=True)
        source.send({m!r}, 2, 2.0)  # the parent is unaffected
        source.stop()
        print("parent: done", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("child: refused:") and "fork()" in lines[0], r.stdout
    assert lines[1:] == ["child: new refused", "parent: child exited 0", "parent: done"], r.stdout + r.stderr[-2000:]
