"""examples/python run as a user runs them (the package from this tree, as
if installed) and their points arrive."""

import os
import signal
import subprocess
import sys

from conftest import CONFIGURED, CONFIGURED_TOKEN, MY_SOURCE_CONFIG, MY_SOURCE_TOKEN, PACKAGE_DIR, ROOT

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


class _Running:
    """An example running as a user runs it, its stdout lines collected."""

    def __init__(self, script, *args):
        import threading

        env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR))
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, text, timeout=30):
        with self._cond:
            if not self._cond.wait_for(lambda: text in self.lines or self.proc.poll() is not None, timeout):
                raise AssertionError(f"no line {text!r} in {self.lines}")
            assert text in self.lines, (self.lines, self.proc.stderr.read())

    def interrupt(self):
        """Ctrl-C: the example must stop cleanly, at once."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the example did not stop on SIGINT")
        stderr = self.proc.stderr.read()
        assert code == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]


def test_counter(manager, url, token, tail):
    # The reference's Counter(IntervalSource): 0, 1, 2, ... once a second.
    sink = tail("example.counter")
    example = _Running("counter.py", "--url", url, "--token", token)
    try:
        sink.collect(3, timeout=30, grace=0)
    finally:
        example.interrupt()
    got = sink.collect(3, grace=0.3)
    assert [p[2] for p in got] == [float(i) for i in range(len(got))]
    times = [p[1] for p in got]
    assert all(0.9e9 <= b - a <= 1.5e9 for a, b in zip(times, times[1:])), times


def test_my_source(manager, tail, url, reference_client):
    # The reference's MySource(Source) with a config handler: declares with
    # the configured rate, sends at it, and takes a new one from a config RPC.
    sink = tail("example.temperature")
    example = _Running("my_source.py", "--url", url, "--token", MY_SOURCE_TOKEN)
    try:
        example.wait_line(f"configured: rate {MY_SOURCE_CONFIG['rate']}")
        sink.collect(5, grace=0)
        metadata = manager.metadata()["example.temperature"]
        assert metadata["rate"] == MY_SOURCE_CONFIG["rate"]
        assert metadata["unit"] == "C" and metadata["some_arbitrary_metadata"] == {"foo": "bar"}
        result = reference_client(MY_SOURCE_TOKEN, [{"rate": 50}])
        assert "error" not in result["config"][0], result
        example.wait_line("configured: rate 50")
        assert manager.metadata()["example.temperature"]["rate"] == 50
    finally:
        example.interrupt()
    got = sink.collect(5, grace=0.3)
    times = [p[1] for p in got]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(19 <= p[2] <= 21 for p in got)
