"""examples/python run as a user runs them (the package from this tree, as
if installed) and their points arrive."""

import os
import subprocess
import sys

from conftest import CONFIGURED, CONFIGURED_TOKEN, PACKAGE_DIR, ROOT

EXAMPLES = ROOT / "examples" / "python"


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR))
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_interval_source(manager, url, tail, metric_prefix):
    prefix = metric_prefix.rstrip(".")
    metrics = [prefix + ".sine", prefix + ".load1", prefix + ".mem_available"]
    sink = tail(*metrics)
    # the manager's configuration for this token sets the period
    out = _run("interval_source.py", "--url", url, "--token", CONFIGURED_TOKEN, "--prefix", prefix, "--duration", "1")
    assert f"period {int(CONFIGURED['period'] * 1000)}ms" in out
    sent = int(out.split("sent ")[1].split()[0])
    assert sent >= 9  # at least 3 rounds
    got = sink.collect(sent)
    assert {p[0] for p in got} == set(metrics)
    assert all(p[2] > 0 for p in got if p[0] == prefix + ".mem_available")


def test_batch_source(manager, url, token, tail, metric_prefix):
    metric = metric_prefix + "signal"
    sink = tail(metric)
    out = _run("batch_source.py", "--url", url, "--token", token, "--metric", metric,
               "--rate", "1000", "--batch", "0.25", "--duration", "0.6")  # fmt: skip
    sent = int(out.split("sent ")[1].split()[0])
    assert sent >= 500 and sent % 250 == 0
    got = sink.collect(sent)
    assert len(got) == sent
    times = [p[1] for p in got]
    assert times == sorted(times) and all(b - a == 1_000_000 for a, b in zip(times, times[1:]))
