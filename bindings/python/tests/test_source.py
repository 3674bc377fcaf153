"""The full cycle against the real broker and the local manager: connect,
declare, send, send_batch, flush, stop; what the sink receives."""

import array
import datetime
import time

import metricq
import numpy as np
import pytest

import libmetricq
from libmetricq import SynchronousSource, Timestamp
from libmetricq.source import _times_buffer, _values_buffer

from conftest import CONFIGURED, CONFIGURED_TOKEN


def test_full_cycle(make_source, tail, metric_prefix):
    a, b = metric_prefix + "a", metric_prefix + "b"
    sink = tail(a, b)
    source = make_source()
    source.declare_metrics({a: {"unit": "V", "rate": 10, "description": "pytest"}, b: None})

    base = 1_700_000_000_000_000_000
    expected = []
    # int ns, Timestamp, aware datetime
    source.send(a, base + 1, 1.5)
    source.send(a, Timestamp(base + 2), -2)
    dt = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    dt_ns = Timestamp.from_datetime(dt).posix_ns
    source.send(b, dt, 3.25)
    expected += [(a, base + 1, 1.5), (a, base + 2, -2.0), (b, dt_ns, 3.25)]

    times = [base + 10 + i for i in range(100)]
    values = [i * 0.5 for i in range(100)]
    source.send_batch(a, times, values)
    expected += [(a, t, v) for t, v in zip(times, values)]

    source.flush()
    source.stop()
    received = sink.collect(len(expected))
    assert sorted(received) == sorted(expected)
    # per metric in order
    assert [p for p in received if p[0] == a] == [p for p in expected if p[0] == a]
    stats = source.stats
    assert stats["points_accepted"] == len(expected)
    assert stats["points_confirmed"] == len(expected)
    assert stats["buffered_points"] == 0


def test_declare_list_and_context_manager(manager, url, token, tail, metric_prefix):
    names = [metric_prefix + n for n in ("x", "y", "z")]
    sink = tail(*names)
    with SynchronousSource(token, url, timeout=20, raise_errors=True) as source:
        source.declare_metrics(names)
        for i, name in enumerate(names):
            source.send(name, 1000 + i, float(i))
    assert source.closed
    assert sorted(sink.collect(3)) == [(n, 1000 + i, float(i)) for i, n in enumerate(names)]
    with pytest.raises(libmetricq.SourceStopped):
        source.send(names[0], 2000, 1.0)


def test_context_manager_stops_on_exception(make_source, manager, url, token, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    with pytest.raises(KeyError):
        with SynchronousSource(token, url, timeout=20, chunk_size=None) as source:
            source.declare_metrics([m])
            source.send(m, 1, 1.0)
            raise KeyError("boom")
    # the points were flushed by the stop in __exit__
    assert sink.collect(1) == [(m, 1, 1.0)]


def test_config(make_source):
    seen = []

    def handler(source, config):
        seen.append(config)
        source.declare_metrics(config["metrics"])

    source = make_source(token=CONFIGURED_TOKEN, config_handler=handler)
    assert len(seen) == 1
    for key, value in CONFIGURED.items():
        assert seen[0][key] == value
        assert source.config[key] == value
    # declared from the handler: sends work at once
    source.send("pytest.configured.a", 1, 1.0)
    source.send("pytest.configured.b", 1, 2.0)
    source.stop()
    with pytest.raises(libmetricq.SourceStopped):
        source.config


def test_config_default_empty(make_source):
    config = make_source().config
    assert {k: v for k, v in config.items() if not k.startswith("_")} == {}


def test_chunk_size(make_source, tail, metric_prefix):
    a, b, c = metric_prefix + "a", metric_prefix + "b", metric_prefix + "c"
    sink = tail(a, b, c)
    source = make_source()
    assert source.chunk_size == 1
    assert source[a].chunk_size == 1  # the source's, until declared
    source.chunk_size = 3
    assert source.chunk_size == 3
    assert source[a].chunk_size == 3
    source.declare_metrics([a, b, c])
    source.chunk_size = 7  # for metrics declared from now on
    assert source[a].chunk_size == 3
    source[b].chunk_size = 2
    source[c].chunk_size = None
    assert source[b].chunk_size == 2 and source[c].chunk_size is None

    source.send(a, 1, 1.0)
    source.send(a, 2, 2.0)
    source.send(b, 1, 1.0)
    source.send(c, 1, 1.0)
    assert source.stats["chunks_published"] == 0  # nothing is full yet
    source.send(a, 3, 3.0)  # a: 3 of 3
    source.send(b, 2, 2.0)  # b: 2 of 2
    got = sink.collect(5)
    assert sorted(got) == sorted([(a, 1, 1.0), (a, 2, 2.0), (a, 3, 3.0), (b, 1, 1.0), (b, 2, 2.0)])
    assert source.stats["chunks_published"] == 2
    time.sleep(0.2)
    assert len(sink.received()) == 5  # c waits for the flush
    source.flush()
    assert sink.collect(6)[-1] == (c, 1, 1.0)


def test_chunk_size_none_in_constructor(make_source, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    source = make_source(chunk_size=None)
    assert source.chunk_size is None
    source.declare_metrics([m])
    assert source[m].chunk_size is None
    for i in range(10):
        source.send(m, i + 1, float(i))
    assert source.stats["points_published"] == 0
    source.flush()
    assert sink.collect(10) == [(m, i + 1, float(i)) for i in range(10)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_chunk_size_invalid(make_source, bad):
    source = make_source()
    with pytest.raises((TypeError, ValueError)):
        source.chunk_size = bad
    with pytest.raises((TypeError, ValueError)):
        source["pytest.x"].chunk_size = bad
    assert source.chunk_size == 1


def test_batch_numpy_zero_copy(make_source, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    source = make_source(chunk_size=1000)
    source.declare_metrics([m])
    n = 2500
    times = np.arange(1_000_000, 1_000_000 + n, dtype=np.int64) * 1000
    values = np.linspace(0.0, 1.0, n)
    # the arrays go to the library as they are
    addr, keep, count = _times_buffer(times)
    assert addr == times.ctypes.data and keep is times and count == n
    addr, keep, count = _values_buffer(values)
    assert addr == values.ctypes.data and keep is values and count == n
    source.send_batch(m, times[:1000], values[:1000])  # contiguous slices: no copy either
    assert _times_buffer(times[1000:])[0] == times[1000:].ctypes.data
    source.send_batch(m, times[1000:], values[1000:])
    source.flush()
    got = sink.collect(n)
    assert got == [(m, int(t), float(v)) for t, v in zip(times, values)]


def test_batch_converted_inputs(make_source, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    source = make_source(chunk_size=None)
    source.declare_metrics([m])
    expected = []

    # non-contiguous arrays (copied)
    times = np.arange(0, 40, dtype=np.int64) + 100
    values = np.arange(0, 40, dtype=np.float64)
    assert not times[::2].flags.c_contiguous
    source.send_batch(m, times[::2], values[::2])
    expected += [(m, int(t), float(v)) for t, v in zip(times[::2], values[::2])]

    # other dtypes: int32 times, float32 values (converted)
    t32 = np.array([200, 201, 202], dtype=np.int32)
    v32 = np.array([0.5, 1.5, 2.5], dtype=np.float32)
    source.send_batch(m, t32, v32)
    expected += [(m, 200, 0.5), (m, 201, 1.5), (m, 202, 2.5)]

    # datetime64
    dt64 = np.array(["1970-01-01T00:00:00.000000300", "1970-01-01T00:00:00.000000301"], dtype="datetime64[ns]")
    source.send_batch(m, dt64, [1, 2])
    expected += [(m, 300, 1.0), (m, 301, 2.0)]

    # tuples, ranges, generators, array.array, Timestamps, datetimes
    source.send_batch(m, (400, 401), (4.0, 4.5))
    source.send_batch(m, range(500, 503), [5, 6, 7])
    source.send_batch(m, (t for t in (600, 601)), (v for v in (8.0, 9.0)))
    source.send_batch(m, array.array("q", [700, 701]), array.array("d", [1.25, 2.25]))
    source.send_batch(m, [Timestamp(800), 801, Timestamp(802)], [0, 1, 2])
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    source.send_batch(m, [epoch + datetime.timedelta(microseconds=1)], [3.0])
    source.send_batch(m, [], [])  # no-op
    source.send_batch(m, np.array([], dtype=np.int64), np.array([]))
    expected += [(m, 400, 4.0), (m, 401, 4.5), (m, 500, 5.0), (m, 501, 6.0), (m, 502, 7.0)]
    expected += [(m, 600, 8.0), (m, 601, 9.0), (m, 700, 1.25), (m, 701, 2.25)]
    expected += [(m, 800, 0.0), (m, 801, 1.0), (m, 802, 2.0), (m, 1000, 3.0)]

    source.flush()
    assert sink.collect(len(expected)) == expected


def test_batch_bad_inputs(make_source, metric_prefix):
    m = metric_prefix + "a"
    source = make_source()
    source.declare_metrics([m])
    with pytest.raises(ValueError):
        source.send_batch(m, [1, 2], [1.0])
    with pytest.raises(TypeError):
        source.send_batch(m, np.array([1.0, 2.0]), [1.0, 2.0])  # float times
    with pytest.raises(TypeError):
        source.send_batch(m, [1.5], [1.0])
    with pytest.raises(ValueError):
        source.send_batch(m, np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2)))
    with pytest.raises(libmetricq.OrderError):
        source.send_batch(m, [3, 2], [1.0, 2.0])
    with pytest.raises(libmetricq.UndeclaredMetric):
        source.send_batch(metric_prefix + "other", [1], [1.0])
    assert source.stats["points_accepted"] == 0  # all or none


@pytest.mark.usefixtures("send_path")
def test_source_metric_send(make_source, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    source = make_source()
    source.declare_metrics([m])
    metric = source[m]
    assert source[m] is metric and metric.id == m
    metric.send(1, 1.0)
    metric.send_batch([2, 3], [2.0, 3.0])
    assert sink.collect(3) == [(m, 1, 1.0), (m, 2, 2.0), (m, 3, 3.0)]


@pytest.mark.usefixtures("send_path")
def test_send_accepts_number_like_values_and_times(make_source, tail, metric_prefix):
    m = metric_prefix + "a"
    sink = tail(m)
    source = make_source()
    source.declare_metrics([m])
    source.send(m, np.int64(1), np.float32(0.5))
    source.send(m, 2, 7)
    source.send(m, 3, np.float64(1.25))
    source.send(m, metricq.Timestamp(4), 2.0)  # the reference's Timestamp too
    source.send(m, 5, 3.0, timeout=libmetricq.Timedelta.from_s(1))
    assert sink.collect(5) == [(m, 1, 0.5), (m, 2, 7.0), (m, 3, 1.25), (m, 4, 2.0), (m, 5, 3.0)]
