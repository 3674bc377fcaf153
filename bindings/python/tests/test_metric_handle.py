"""Metric handles: source.metric(name), whose send and send_batch go to the
library by its handle of the metric (mq_metric_send) instead of by name,
with the rules, errors and logging of source.send; and a handle that
outlives its source fails, never crashes."""

import gc
import logging
import weakref

import numpy as np
import pytest

import libmetricq
from conftest import require_fastsend
from libmetricq import InvalidArgument, OrderError, SourceStopped, UndeclaredMetric


@pytest.mark.usefixtures("send_path")
def test_sends_by_handle_arrive(make_source, tail, metric_prefix):
    a, b = metric_prefix + "a", metric_prefix + "b"
    sink = tail(a, b)
    src = make_source()
    src.declare_metrics([a, b])
    ma = src.metric(a)
    assert src.metric(a) is ma is src[a] and ma.id == a
    mb = src.metric(b)
    ma.send(1, 1.0)
    mb.send(1, 10.0)
    ma.send(libmetricq.Timestamp(2), np.float32(2.5))
    ma.send_batch(np.array([3, 4], dtype=np.int64), np.array([3.0, 4.0]))
    mb.send_batch([2, 3], [20, 30])
    ma.send(5, 5, timeout=None)
    points = sink.collect(8)
    assert [p for p in points if p[0] == a] == [(a, 1, 1.0), (a, 2, 2.5), (a, 3, 3.0), (a, 4, 4.0), (a, 5, 5.0)]
    assert [p for p in points if p[0] == b] == [(b, 1, 10.0), (b, 2, 20.0), (b, 3, 30.0)]
    assert src.stats["points_accepted"] == 8


@pytest.mark.usefixtures("send_path")
def test_same_rules_as_by_name(make_source, metric_prefix):
    m = metric_prefix + "a"
    src = make_source()
    handle = src.metric(m)  # before the declaration: sends are undeclared
    with pytest.raises(UndeclaredMetric) as e:
        handle.send(1, 1.0)
    assert m in str(e.value)
    src.declare_metrics([m])
    handle.send(10, 1.0)
    with pytest.raises(OrderError):
        handle.send(10, 2.0)
    with pytest.raises(OrderError):
        handle.send_batch([11, 11], [1.0, 2.0])
    with pytest.raises(InvalidArgument):
        handle.send_batch([11, 12], [1.0])
    with pytest.raises(TypeError):
        handle.send(1.5, 1.0)  # float time: ambiguous
    with pytest.raises(TypeError):
        handle.send(11, "one")
    with pytest.raises(ValueError):
        handle.send(1 << 63, 1.0)
    with pytest.raises(ValueError):
        handle.send(-(1 << 63) - 1, 1.0)
    for bad in (0, -1, float("nan")):
        with pytest.raises(InvalidArgument, match="timeout"):
            handle.send(11, 1.0, timeout=bad)
    handle.send(11, 1.0)  # nothing refused was accepted
    assert src.stats["points_accepted"] == 2


def test_bad_names_have_no_handle(make_source):
    src = make_source()
    for bad in ("", "a*b", "_reserved", "x" * 256):
        with pytest.raises(InvalidArgument):
            src.metric(bad)
    with pytest.raises(TypeError):
        src.metric(1234)


@pytest.mark.usefixtures("send_path")
def test_stale_handle_fails(make_source, metric_prefix):
    m = metric_prefix + "a"
    src = make_source()
    src.declare_metrics([m])
    handle = src.metric(m)
    src.stop()
    with pytest.raises(SourceStopped):
        handle.send(1, 1.0)
    with pytest.raises(SourceStopped):
        handle.send_batch([1], [1.0])
    src.close()  # frees the source: the library's handle is stale now
    with pytest.raises(SourceStopped, match="closed"):
        handle.send(2, 1.0)
    with pytest.raises(SourceStopped, match="closed"):
        handle.send_batch([2], [1.0])
    with pytest.raises(SourceStopped):
        src.metric(metric_prefix + "b")


def test_errors_logged_by_default(make_source, metric_prefix, caplog):
    m = metric_prefix + "a"
    src = make_source(raise_errors=False)
    src.declare_metrics([m])
    handle = src.metric(m)
    handle.send(5, 1.0)
    with caplog.at_level(logging.ERROR, logger="libmetricq"):
        handle.send(5, 2.0)  # out of order: logged, not raised
        handle.send_batch([1], [1.0])
    assert src.stats["points_accepted"] == 1
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("send of", "send_batch of"))]
    assert len(failed) == 2 and all(m in text for text in failed), failed


def test_send_is_c_once_bound(make_source, tail, metric_prefix):
    require_fastsend()
    from libmetricq import _fastsend

    m = metric_prefix + "a"
    sink = tail(m)
    src = make_source()
    src.declare_metrics([m])
    unbound = src[m]
    assert type(unbound.send) is not _fastsend.Sender  # no handle yet
    unbound.send(1, 1.0)  # binds it
    handle = src.metric(m)
    assert handle is unbound and type(handle.send) is _fastsend.Sender
    handle.send(2, 2)  # int value: the C path too
    handle.send(3, 3.0, timeout=5)  # keywords: the full send
    handle.send(libmetricq.Timestamp(4), 4.0)  # not an int: the full send
    handle.send(5, 5.0, True, 5.0)
    with pytest.raises(OrderError):  # refused in C, raised by the binding
        handle.send(5, 6.0)
    with pytest.raises(TypeError):
        handle.send(6, "six")
    with pytest.raises(ValueError):
        handle.send(1 << 64, 1.0)
    handle.send(6, 6.0, block=False)
    assert sink.collect(6) == [(m, t, float(t)) for t in range(1, 7)]


def test_bound_metric_does_not_keep_its_source_alive(manager, url, token, metric_prefix):
    src = libmetricq.SynchronousSource(token, url, timeout=20)
    src.metric(metric_prefix + "a")  # its send holds the metric's methods: a cycle
    ref = weakref.ref(src)
    src.close()
    del src
    gc.collect()
    assert ref() is None
