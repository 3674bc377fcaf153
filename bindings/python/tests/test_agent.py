"""Source and IntervalSource subclassed as in the reference, synchronously:
config handlers with the manager's configuration as keyword arguments, the
period's grid with missed deadlines skipped, run() until stop() and what
run() raises."""

import threading
import time

import pytest

import libmetricq
from conftest import CONFIGURED, CONFIGURED_TOKEN
from libmetricq import IntervalSource, Source, Timedelta, Timestamp, rpc_handler


class Recorder(IntervalSource):
    """Sends its update count to `metric` and stops after `rounds` updates."""

    def __init__(self, *args, metric, rounds, sleep_first=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric = metric
        self.rounds = rounds
        self.sleep_first = sleep_first
        self.calls = []
        self.configs = []

    @rpc_handler("config")
    def _on_config(self, **config):
        self.configs.append(config)
        if "period" in config:
            self.period = config["period"]
        self.declare_metrics([self.metric])

    def update(self):
        self.calls.append(time.monotonic())
        self.send(self.metric, Timestamp.now(), len(self.calls) - 1)
        if len(self.calls) == 1 and self.sleep_first:
            time.sleep(self.sleep_first)
        if len(self.calls) == self.rounds:
            self.stop()


def test_period_from_the_configuration(manager, url, tail, metric_prefix):
    m = metric_prefix + "count"
    sink = tail(m)
    source = Recorder(CONFIGURED_TOKEN, url, metric=m, rounds=4)
    assert source.period is None
    assert source.run() is None
    # keyword arguments: the configuration as the manager sent it (with its
    # document's "_id" and "_rev", as the reference gets them too)
    assert len(source.configs) == 1
    assert {k: v for k, v in source.configs[0].items() if not k.startswith("_")} == CONFIGURED
    assert source.period == Timedelta.from_s(CONFIGURED["period"])
    got = sink.collect(4)
    assert [p[2] for p in got] == [0.0, 1.0, 2.0, 3.0]
    gaps = [b - a for a, b in zip(source.calls, source.calls[1:])]
    assert all(0.2 <= g < 0.5 for g in gaps), gaps
    assert source.stats["points_confirmed"] == 4


def test_missed_deadlines_are_skipped(manager, url, token, metric_prefix):
    # period 0.1 s, the first update takes 0.35 s: the deadlines at 0.1,
    # 0.2 and 0.3 s are skipped, the next update runs at 0.4 s on the grid.
    source = Recorder(token, url, metric=metric_prefix + "a", rounds=4, sleep_first=0.35, period=0.1)
    source.run()
    gaps = [b - a for a, b in zip(source.calls, source.calls[1:])]
    assert 0.38 <= gaps[0] < 0.6, gaps
    assert all(g >= 0.08 for g in gaps), gaps  # never a burst to catch up


def test_a_config_rpc_reaches_the_handler_and_the_period(manager, url, token, metric_prefix, reference_client):
    source = Recorder(token, url, metric=metric_prefix + "a", rounds=10**9, period=Timedelta.from_s(5))
    result = {}

    def push():
        # wait for the first update, then change the period by config RPC
        while not source.calls:
            time.sleep(0.01)
        result.update(reference_client(source.token, [{"period": 0.05}]))
        applied = time.monotonic()
        while len([c for c in source.calls if c > applied]) < 5 and time.monotonic() < applied + 10:
            time.sleep(0.01)
        source.stop()

    pusher = threading.Thread(target=push)
    pusher.start()
    source.run()
    pusher.join()
    assert "error" not in result["config"][0], result
    assert source.configs[-1] == {"period": 0.05}
    assert source.period == Timedelta.from_ms(50)
    assert len(source.calls) >= 6  # one at 5 s would not have come yet


def test_update_failure_stops_and_is_raised(manager, url, token, metric_prefix):
    class Failing(IntervalSource):
        @rpc_handler("config")
        def on_config(self, **_config):
            self.declare_metrics([metric_prefix + "a"])

        def update(self):
            self.send(metric_prefix + "undeclared", Timestamp.now(), 1.0)

    source = Failing(token, url, period=0.05)
    with pytest.raises(libmetricq.UndeclaredMetric):
        source.run()
    with pytest.raises(libmetricq.SourceStopped):
        source.send(metric_prefix + "a", Timestamp.now(), 1.0)


def test_period_values(manager, url, token):
    source = IntervalSource("source-pytest-x", url, period=Timedelta.from_ms(250))
    assert source.period == Timedelta.from_ms(250)
    source.period = 2
    assert source.period == Timedelta.from_s(2)
    with pytest.raises(TypeError):
        source.period = None
    with pytest.raises(TypeError):
        source.period = "1s"
    with pytest.raises(ValueError):
        source.period = 0
    # Connected and configured, still no period: refused, and stopped.
    unset = IntervalSource(token, url)
    with pytest.raises(ValueError, match="period"):
        unset.run()
    with pytest.raises(libmetricq.SourceStopped):
        unset.declare_metrics(["pytest.x"])


class Ticker(Source):
    """A plain Source with a task, as the reference's Source subclasses."""

    def __init__(self, *args, metric, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric = metric
        self.sent = 0

    @rpc_handler("config")
    def on_config(self, **_config):
        self.declare_metrics({self.metric: {"unit": "1"}})

    def task(self):
        while not self.task_stop_event.wait(0.01):
            self.sent += 1
            self.send(self.metric, self.sent, float(self.sent))


def test_source_task_until_stop_from_another_thread(manager, url, token, tail, metric_prefix):
    m = metric_prefix + "tick"
    sink = tail(m)
    source = Ticker(token, url, metric=m, client_version="5.6.7")
    threading.Timer(0.5, source.stop).start()
    assert source.run() is None
    assert source.sent >= 5
    got = sink.collect(source.sent)
    assert [p[1] for p in got] == list(range(1, source.sent + 1))


def test_stop_with_an_exception_is_raised_by_run(manager, url, token, metric_prefix):
    source = Ticker(token, url, metric=metric_prefix + "tick")
    threading.Timer(0.2, source.stop, args=(KeyError("why"),)).start()
    with pytest.raises(KeyError, match="why"):
        source.run()


def test_run_raises_when_the_source_stops_on_its_own(manager, proxy, token, metric_prefix):
    source = Ticker(token, proxy.url, metric=metric_prefix + "tick", connection_timeout=1)
    threading.Timer(0.3, proxy.cut).start()
    start = time.monotonic()
    try:
        with pytest.raises(libmetricq.ConnectFailed):
            source.run()
        assert time.monotonic() - start < 20
    finally:
        source.close()


def test_constructor_arguments(url):
    # SynchronousSource's, checked at once, naming what is wrong.
    for kwargs, name in [
        ({"periodd": 1}, "periodd"),
        ({"config_handler": print}, "config_handler"),
        ({"raise_errors": False}, "raise_errors"),
        ({"chunk_size": 0}, "chunk_size"),
    ]:
        with pytest.raises((TypeError, ValueError), match=name):
            Source("source-pytest-x", url, **kwargs)
    with pytest.raises(TypeError):
        Source()
    source = Ticker(token="source-pytest-x", url=url, metric="pytest.x", chunk_size=None, add_uuid=True)
    assert source.chunk_size is None
    prefix, _, suffix = source.token.rpartition(".")
    assert prefix == "source-pytest-x" and len(suffix) == 32
    with pytest.raises(TypeError, match="url"):
        Source("source-pytest-x")
