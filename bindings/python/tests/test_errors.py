"""Error mapping: every status of the library raises its exception with
block=True; with block=False nothing raises and the failure is logged."""

import base64
import json
import logging
import secrets
import time
import urllib.parse
import urllib.request

import pytest

import libmetricq
from libmetricq import (
    ConnectFailed,
    InvalidArgument,
    MetricQError,
    OrderError,
    RPCError,
    SourceStopped,
    SynchronousSource,
    UndeclaredMetric,
)

BAD_NAMES = ["", "a*b", "a.#", "_hidden", "x" * 256, "nul\0inside", "\udcff-surrogate"]


def _errors(caplog):
    return [r for r in caplog.records if r.name == "libmetricq" and r.levelno >= logging.ERROR]


def _wait_errors(caplog, n, timeout=10):
    deadline = time.monotonic() + timeout
    while len(_errors(caplog)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return _errors(caplog)


def test_hierarchy():
    assert issubclass(InvalidArgument, ValueError) and issubclass(InvalidArgument, MetricQError)
    assert issubclass(OrderError, ValueError)
    assert issubclass(libmetricq.Timeout, TimeoutError) and issubclass(libmetricq.Timeout, MetricQError)
    assert issubclass(ConnectFailed, ConnectionError)
    statuses = {
        InvalidArgument: -1,
        libmetricq.Timeout: -2,
        ConnectFailed: -3,
        RPCError: -4,
        UndeclaredMetric: -5,
        OrderError: -6,
        libmetricq.PublishFailed: -7,
        SourceStopped: -8,
        libmetricq.InternalError: -9,
    }
    for cls, status in statuses.items():
        assert cls.status == status
        assert cls().status == status and str(cls())  # default message: mq_strerror


@pytest.mark.usefixtures("send_path")
@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_bad_names(make_source, name):
    source = make_source()
    with pytest.raises(InvalidArgument) as e:
        source.declare_metrics([name])
    assert e.value.status == libmetricq._lib.ERR_INVALID
    with pytest.raises(ValueError):
        source.declare_metrics({name: {"unit": "V"}})
    with pytest.raises(ValueError):
        source.send(name, 1, 1.0)
    with pytest.raises(ValueError):
        source.send_batch(name, [1], [1.0])
    with pytest.raises(ValueError):
        source[name].chunk_size = 2


def test_longest_name(make_source, tail, metric_prefix):
    name = (metric_prefix + "x" * 255)[:255]
    sink = tail(name)
    source = make_source()
    source.declare_metrics([name])
    source.send(name, 1, 1.0)
    assert sink.collect(1) == [(name, 1, 1.0)]


@pytest.mark.usefixtures("send_path")
def test_undeclared(make_source, metric_prefix):
    source = make_source()
    with pytest.raises(UndeclaredMetric) as e:
        source.send(metric_prefix + "never", 1, 1.0)
    assert metric_prefix + "never" in str(e.value)
    assert e.value.status == -5


@pytest.mark.usefixtures("send_path")
def test_order(make_source, metric_prefix):
    m = metric_prefix + "a"
    source = make_source()
    source.declare_metrics([m])
    source.send(m, 10, 1.0)
    with pytest.raises(OrderError):
        source.send(m, 10, 1.0)
    with pytest.raises(OrderError):
        source.send(m, 9, 1.0)
    with pytest.raises(OrderError):
        source.send_batch(m, [11, 11], [1.0, 2.0])
    source.send(m, 11, 1.0)  # nothing of the failed batch was accepted
    assert source.stats["points_accepted"] == 2


@pytest.mark.usefixtures("send_path")
def test_after_stop_and_close(make_source, metric_prefix):
    m = metric_prefix + "a"
    source = make_source()
    source.declare_metrics([m])
    source.stop()
    source.stop()  # idempotent
    for call in (
        lambda: source.send(m, 1, 1.0),
        lambda: source.send_batch(m, [1], [1.0]),
        lambda: source.declare_metrics([m]),
        lambda: source.flush(),
    ):
        with pytest.raises(SourceStopped):
            call()
    assert source.stats["points_accepted"] == 0  # still readable after stop
    source.close()
    source.close()  # idempotent
    for call in (
        lambda: source.send(m, 1, 1.0),
        lambda: source.stop(),
        lambda: source.stats,
        lambda: source.config,
        lambda: setattr(source, "chunk_size", 5),
    ):
        with pytest.raises(SourceStopped, match="closed"):
            call()


@pytest.mark.usefixtures("send_path")
def test_bad_arguments(make_source, metric_prefix):
    m = metric_prefix + "a"
    source = make_source()
    source.declare_metrics([m])
    with pytest.raises(TypeError):
        source.send(m, 1.5, 1.0)  # float time: ambiguous
    with pytest.raises(TypeError):
        source.send(m, "1", 1.0)
    with pytest.raises(TypeError):
        source.send(m, 1, "one")
    with pytest.raises(TypeError):
        source.send(1234, 1, 1.0)
    import datetime

    with pytest.raises(TypeError):
        source.send(m, datetime.datetime(2024, 1, 1), 1.0)  # naive
    with pytest.raises(ValueError):
        source.send(m, 1 << 63, 1.0)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(InvalidArgument, match="timeout"):
            source.send(m, 1, 1.0, timeout=bad)
        with pytest.raises(InvalidArgument, match="timeout"):
            source.flush(timeout=bad)
    source.send(m, 1, 1.0, timeout=None)  # no limit
    source.flush(timeout=None)
    with pytest.raises(InvalidArgument):
        source.declare_metrics({m: {"bad": float("nan")}})
    with pytest.raises(TypeError):
        source.declare_metrics({m: ["not", "a", "dict"]})
    with pytest.raises(TypeError):
        source.declare_metrics(m)  # a str, not a list
    with pytest.raises(TypeError):
        source.declare_metrics({m: {"obj": object()}})
    assert source.stats["points_accepted"] == 1


def test_bad_url_and_token(manager, url):
    with pytest.raises(InvalidArgument, match="scheme"):
        SynchronousSource("source-pytest-x", "http://127.0.0.1/")
    with pytest.raises(InvalidArgument):
        SynchronousSource("source-pytest-\0x", url)
    with pytest.raises(InvalidArgument):
        SynchronousSource("", url)
    with pytest.raises(TypeError):
        SynchronousSource("source-pytest-x", url, chunk_size=1.5)
    with pytest.raises(ValueError):
        SynchronousSource("source-pytest-x", url, max_buffered=0)


def test_connect_failed(url):
    parsed = urllib.parse.urlsplit(url)
    refused = parsed._replace(netloc=f"{parsed.username}:{parsed.password}@127.0.0.1:1").geturl()
    with pytest.raises(ConnectFailed) as e:
        SynchronousSource("source-pytest-refused", refused, timeout=10)
    assert parsed.password not in str(e.value).replace(parsed.username, "")
    assert isinstance(e.value, ConnectionError)


def test_config_handler_refuses(make_source, caplog):
    def handler(source, config):
        raise RuntimeError("refused by the test")

    with pytest.raises(RPCError):
        make_source(config_handler=handler)
    assert any("refused by the test" in (r.exc_text or "") for r in caplog.records if r.name == "libmetricq")


@pytest.mark.usefixtures("send_path")
def test_buffer_full_timeout(make_source, metric_prefix, caplog):
    m = metric_prefix + "a"
    # No automatic chunks and room for 4 points: the 5th waits for a flush.
    source = make_source(chunk_size=None, max_buffered=4)
    source.declare_metrics([m])
    for i in range(4):
        source.send(m, i + 1, 1.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        source.send(m, 5, 1.0, timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 2
    assert isinstance(e.value, MetricQError) and e.value.status == -2
    with pytest.raises(TimeoutError):
        source.send_batch(m, [5, 6], [1.0, 2.0], timeout=0.1)

    # block=False: no wait, no exception, logged
    start = time.monotonic()
    source.send(m, 5, 1.0, block=False)
    assert time.monotonic() - start < 0.1
    assert "buffer full" in _errors(caplog)[-1].getMessage()
    assert source.stats["points_accepted"] == 4

    source.flush()
    source.send(m, 5, 1.0, timeout=0.2)  # room again


@pytest.mark.usefixtures("send_path")
def test_block_false_never_raises(make_source, metric_prefix, caplog):
    m = metric_prefix + "a"
    source = make_source()
    source.declare_metrics([m])
    source.send(m, 10, 1.0)
    calls = [
        lambda: source.send(m, 10, 1.0, block=False),  # order
        lambda: source.send(metric_prefix + "undeclared", 1, 1.0, block=False),
        lambda: source.send("a*b", 1, 1.0, block=False),
        lambda: source.send("nul\0", 1, 1.0, block=False),
        lambda: source.send(m, 1.5, 1.0, block=False),
        lambda: source.send(m, 11, "x", block=False),
        lambda: source.send(m, 1 << 64, 1.0, block=False),
        lambda: source.declare_metrics("not a list", block=False),
    ]
    for call in calls:
        call()
    assert len(_errors(caplog)) == len(calls)
    # background calls: return at once, fail later, logged
    source.declare_metrics(["bad*name"], block=False)
    assert len(_wait_errors(caplog, len(calls) + 1)) == len(calls) + 1
    source.send(m, 11, 1.0, block=False)  # fine
    source.stop(block=False)
    # (sends made while the stop is under way are still accepted, and published)
    deadline = time.monotonic() + 10
    k = 12
    while time.monotonic() < deadline:
        try:
            source.send(m, k, 1.0)
        except SourceStopped:
            break
        k += 1
        time.sleep(0.01)
    else:
        pytest.fail("the background stop did not stop the source")
    source.send(m, k + 1, 1.0, block=False)
    source.flush(block=False)
    errors = _wait_errors(caplog, len(calls) + 3)
    assert len(errors) == len(calls) + 3
    assert source.stats["points_accepted"] == 2 + (k - 12)


# --- a connect that times out: a vhost whose "manager" never answers -----


def _api(url, method, path, body=None):
    parsed = urllib.parse.urlsplit(url)
    req = urllib.request.Request(
        f"http://{parsed.hostname}:15672/api/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic "
            + base64.b64encode(f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password)}".encode()).decode(),
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


@pytest.fixture
def silent_manager_url(url):
    """A fresh vhost with the manager's exchanges and a queue that takes the
    requests, but no manager: RPCs are routed and never answered."""
    parsed = urllib.parse.urlsplit(url)
    vhost = "libmetricq-pytest-silent-" + secrets.token_hex(4)
    _api(url, "PUT", f"vhosts/{vhost}")
    try:
        user = urllib.parse.quote(urllib.parse.unquote(parsed.username), safe="")
        _api(url, "PUT", f"permissions/{vhost}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        for exchange in ("metricq.management", "metricq.broadcast"):
            _api(url, "PUT", f"exchanges/{vhost}/{exchange}", {"type": "topic", "durable": True})
        _api(url, "PUT", f"queues/{vhost}/silent", {"durable": False})
        _api(url, "POST", f"bindings/{vhost}/e/metricq.management/q/silent", {"routing_key": "#"})
        yield parsed._replace(path="/" + vhost).geturl()
    finally:
        _api(url, "DELETE", f"vhosts/{vhost}")


def test_connect_timeout(silent_manager_url):
    start = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        SynchronousSource("source-pytest-silent", silent_manager_url, timeout=0.5)
    # (the library gives up on the unanswered register RPC somewhat before the timeout)
    assert 0.2 <= time.monotonic() - start < 5
    assert isinstance(e.value, MetricQError)
