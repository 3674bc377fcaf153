"""A program written for the reference ``metricq.SynchronousSource``, with
only the import changed: its constructor arguments are taken and honoured,
and failures other than timeouts are logged, not raised."""

import logging
import time
import warnings

import pytest

import libmetricq
from libmetricq import ConnectFailed, SourceStopped, SynchronousSource, Timedelta


def _logged(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "libmetricq" and r.levelno >= logging.ERROR]


@pytest.mark.usefixtures("send_path")
def test_failures_are_logged_and_the_loop_survives(manager, url, token, tail, metric_prefix, caplog):
    m = metric_prefix + "a"
    sink = tail(m)
    source = SynchronousSource(token, url)
    try:
        source.declare_metrics({m: {"unit": "C"}})
        source.send(m, 10, 1.0)
        # Each of these raises in a binding that raises; the reference logs.
        source.send(metric_prefix + "undeclared", 11, 2.0)
        source.send(m, 10, 3.0)  # not after the last timestamp
        source.send("bad*name", 11, 4.0)
        source.send(m, 11.5, 5.0)  # a float time
        source.send_batch(m, [12, 12], [6.0, 7.0])  # not increasing
        source.declare_metrics(["bad*name"])
        source.send(m, 12, 8.0)  # the loop carries on
        logged = _logged(caplog)
        assert len(logged) == 6, logged
        for text, metric, reason in zip(
            logged,
            [metric_prefix + "undeclared", m, "bad*name", m, m, "bad*name"],
            ["not declared", "not after", "bad metric name", "time", "increas", "bad metric name"],
        ):
            assert metric in text and reason in text.lower(), (text, metric, reason)
        source.stop()
        assert source.stats["points_accepted"] == 2
    finally:
        source.close()
    assert sink.collect(2) == [(m, 10, 1.0), (m, 12, 8.0)]
    # After the stop: logged too.
    source.send(m, 13, 9.0)
    assert "stopped" in _logged(caplog)[-1] or "closed" in _logged(caplog)[-1]


def test_timeouts_still_raise(make_source, metric_prefix, caplog):
    m = metric_prefix + "a"
    source = make_source(chunk_size=None, max_buffered=2, raise_errors=False)
    source.declare_metrics([m])
    source.send(m, 1, 1.0)
    source.send(m, 2, 1.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        source.send(m, 3, 1.0, timeout=0.2)
    assert time.monotonic() - start >= 0.2
    with pytest.raises(TimeoutError):
        source.send_batch(m, [3, 4], [1.0, 1.0], timeout=0.1)
    # block=False returns at once, never raises, and logs.
    start = time.monotonic()
    source.send(m, 3, 1.0, block=False)
    assert time.monotonic() - start < 0.1
    assert "send" in _logged(caplog)[-1] and m in _logged(caplog)[-1]


def test_raise_errors_restores_exceptions(make_source, metric_prefix):
    source = make_source(raise_errors=True)
    with pytest.raises(libmetricq.UndeclaredMetric):
        source.send(metric_prefix + "undeclared", 1, 1.0)
    with pytest.raises(libmetricq.InvalidArgument):
        source.declare_metrics(["bad*name"])
    # After a metric's first accepted point, send by name goes through the
    # metric's handle: its errors are the same.
    m = metric_prefix + "a"
    source.declare_metrics([m])
    source.send(m, 10, 1.0)
    source.send(m, 11, 1.0)
    with pytest.raises(libmetricq.OrderError):
        source.send(m, 11, 2.0)
    source.stop()
    with pytest.raises(SourceStopped):
        source.flush()
    with pytest.raises(SourceStopped):
        source.send(m, 12, 1.0)


def test_constructor_of_the_reference(manager, url, token, reference_client):
    # token and url as keywords, client_version, add_uuid, connection_timeout
    with SynchronousSource(
        token=token, url=url, client_version="9.8.7-test", add_uuid=True, connection_timeout=Timedelta.from_s(30)
    ) as source:
        prefix, _, suffix = source.token.rpartition(".")
        assert prefix == token and len(suffix) == 32 and int(suffix, 16) >= 0
        result = reference_client(source.token)
        assert result["discover"], result
        for reply in result["discover"]:
            assert reply["reply"]["version"] == "9.8.7-test"
            assert reply["reply"]["alive"] is True
    # Without client_version, no version is claimed.
    with SynchronousSource(token, url) as source:
        assert source.token == token
        assert all("version" not in r["reply"] for r in reference_client(token)["discover"])


def test_management_url_is_a_deprecated_alias(manager, url, token):
    with pytest.warns(DeprecationWarning, match="management_url"):
        source = SynchronousSource(token, management_url=url)
    source.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match="url"):
            SynchronousSource(token, url, management_url=url)
    with pytest.raises(TypeError, match="url"):
        SynchronousSource(token)


def test_arguments_it_cannot_honour_are_refused_by_name(url):
    for kwargs, name in [
        ({"connection_timeout": 0}, "connection_timeout"),
        ({"connection_timeout": "10"}, "connection_timeout"),
        ({"client_version": 5}, "client_version"),
        ({"client_version": "x" * 300}, "client_version"),
        ({"add_uuid": "yes"}, "add_uuid"),
        ({"period": 1}, "period"),  # a Source argument, not the SynchronousSource's
    ]:
        with pytest.raises((TypeError, ValueError), match=name):
            SynchronousSource("source-pytest-x", url, **kwargs)


def test_connection_timeout_stops_the_source_and_wait_says_why(manager, proxy, token, metric_prefix, caplog):
    m = metric_prefix + "a"
    source = SynchronousSource(token, proxy.url, connection_timeout=1)
    try:
        source.declare_metrics([m])
        with pytest.raises(TimeoutError):
            source.wait(0.05)  # running
        proxy.cut()
        start = time.monotonic()
        with pytest.raises(ConnectFailed) as e:
            source.wait(30)
        assert 0.9 <= time.monotonic() - start < 20, time.monotonic() - start
        assert "1s" in str(e.value) or "reconnect" in str(e.value).lower(), str(e.value)
        # Later calls: logged with the cause.
        source.send(m, 1, 1.0)
        assert "stopped" in _logged(caplog)[-1]
    finally:
        source.close()
    source.wait()  # closed: nothing to wait for


def _connections_of(url, token):
    """{connection name: negotiated heartbeat} of the broker's connections
    whose name holds token (RabbitMQ's management API)."""
    import base64
    import json
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    auth = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password)}"
    req = urllib.request.Request(
        f"http://{parsed.hostname}:15672/api/connections?columns=client_properties,timeout",
        headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        conns = json.load(resp)
    out = {}
    for c in conns:
        name = c.get("client_properties", {}).get("connection_name", "")
        if token in name:
            out[name] = c.get("timeout")
    return out


def test_heartbeat_is_negotiated(manager, url, token):
    with SynchronousSource(token, url, heartbeat=3) as source:
        deadline = time.monotonic() + 10
        while len(conns := _connections_of(url, token)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the management API's view lags a little
        assert len(conns) == 2 and set(conns.values()) == {3}, conns
        source.stop()
    for bad in (0.5, 0, 70000, "5"):
        with pytest.raises((TypeError, ValueError), match="heartbeat"):
            SynchronousSource(token, url, heartbeat=bad)


def test_wait_after_stop(make_source):
    source = make_source()
    source.stop()
    assert source.wait(5) is None
