"""Fixtures for the libmetricq Python tests: a real RabbitMQ vhost, a local
MetricQ manager (cmd/metricq-manager) and `metricq-manager tail`
as the sink that checks what arrived.

Run them through scripts/with-vhost.sh, which sets METRICQ_TEST_URL:

    scripts/with-vhost.sh .venv/bin/python -m pytest -q bindings/python/tests

The tests import the package from this source tree. The C library is the
copy bundled in the package (libmetricq/_lib, put there by `make python`)
or, when there is none, build/lib (LIBMETRICQ_PATH is set to it here).
"""

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE_DIR = ROOT / "bindings" / "python"
BUNDLED = PACKAGE_DIR / "libmetricq" / "_lib" / "libmetricq.so.0"
BUILT = ROOT / "build" / "lib" / "libmetricq.so.0"

sys.path.insert(0, str(PACKAGE_DIR))
if not BUNDLED.exists() and not os.environ.get("LIBMETRICQ_PATH"):
    os.environ["LIBMETRICQ_PATH"] = str(BUILT.parent)

# Token of the source the manager has a configuration for (see manager()).
CONFIGURED_TOKEN = "source-pytest-configured"
CONFIGURED = {"period": 0.25, "metrics": ["pytest.configured.a", "pytest.configured.b"], "nested": {"x": [1, 2.5, "s"]}}
# Token of examples/python/my_source.py in the tests, and its configuration.
MY_SOURCE_TOKEN = "source-pytest-my-source"
MY_SOURCE_CONFIG = {"rate": 20}


def pytest_configure(config):
    if BUNDLED.exists() and BUILT.exists() and _digest(BUNDLED) != _digest(BUILT):
        raise pytest.UsageError(
            f"{BUNDLED} differs from {BUILT}: the tests would run the stale bundled copy; run `make python`"
        )
    if not BUNDLED.exists() and not Path(os.environ["LIBMETRICQ_PATH"]).exists():
        raise pytest.UsageError(
            f"no libmetricq.so: build it with `make -f mk/capi.mk lib` (LIBMETRICQ_PATH={os.environ['LIBMETRICQ_PATH']})"
        )


def pytest_report_header(config):
    import libmetricq

    return f"libmetricq: {libmetricq.library_version()} from {libmetricq.LIBRARY_PATH}"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the broker and vhost locks (internal/testenv) -------------------------


def _go_tempdir():
    # Go's os.TempDir: $TMPDIR, else /tmp.
    return os.environ.get("TMPDIR") or "/tmp"


_locks = []  # open lock files, held until the process exits


def _lock_vhost(url):
    """Takes the locks the Go tests take (testenv.URL and
    testenv.ExclusiveVhost): the broker lock shared, then the vhost lock
    exclusively, letting go of the broker lock while waiting for the vhost,
    so a Go test waiting to restart the broker does not wait for us."""
    broker = os.open(os.path.join(_go_tempdir(), "libmetricq-broker.lock"), os.O_CREAT | os.O_RDWR, 0o666)
    _locks.append(broker)
    fcntl.flock(broker, fcntl.LOCK_SH)
    digest = hashlib.sha256(url.encode()).digest()[:8].hex()
    vhost = os.open(os.path.join(_go_tempdir(), f"libmetricq-vhost-{digest}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    _locks.append(vhost)
    try:
        fcntl.flock(vhost, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(broker, fcntl.LOCK_UN)
        fcntl.flock(vhost, fcntl.LOCK_EX)
        fcntl.flock(broker, fcntl.LOCK_SH)


@pytest.fixture(scope="session")
def url():
    u = os.environ.get("METRICQ_TEST_URL")
    if not u:
        pytest.fail(
            "METRICQ_TEST_URL is not set: these tests need RabbitMQ. Run them through scripts/with-vhost.sh, "
            "e.g. scripts/with-vhost.sh .venv/bin/python -m pytest bindings/python/tests"
        )
    _lock_vhost(u)
    return u


# --- the manager -------------------------------------------------------------


class Manager:
    """A metricq-manager process; its stderr lines are kept for wait_log."""

    def __init__(self, binary, url, config_file, metadata_file):
        self.binary = binary
        self.url = url
        self.metadata_file = metadata_file
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [binary, "-config", str(config_file), "-metadata", str(metadata_file), url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_log(self, predicate, timeout=20):
        """Waits for a stderr line with predicate(line) true; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self.proc.poll() is not None:
                    raise RuntimeError("metricq-manager exited:\n" + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("metricq-manager did not log the line awaited:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))

    def metadata(self):
        """The metadata of every metric declared so far (the manager's
        -metadata file, rewritten after each declare)."""
        try:
            return json.loads(self.metadata_file.read_text())
        except FileNotFoundError:
            return {}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def manager_binary(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is not on PATH: needed to build cmd/metricq-manager")
    out = tmp_path_factory.mktemp("bin") / "metricq-manager"
    subprocess.run([go, "build", "-o", str(out), "./cmd/metricq-manager"], cwd=ROOT, check=True)
    return str(out)


@pytest.fixture(scope="session")
def manager(url, manager_binary, tmp_path_factory):
    directory = tmp_path_factory.mktemp("manager")
    config_file = directory / "config.json"
    config_file.write_text(json.dumps({CONFIGURED_TOKEN: CONFIGURED, MY_SOURCE_TOKEN: MY_SOURCE_CONFIG}))
    m = Manager(manager_binary, url, config_file, directory / "metadata.json")
    try:
        m.wait_log(lambda line: "MetricQ manager running" in line, timeout=30)
        yield m
    finally:
        m.stop()


# --- the sink ------------------------------------------------------------------


class Tail:
    """`metricq-manager tail -json` subscribed to some metrics; ready (its
    queue is bound) once the constructor returns."""

    def __init__(self, manager, metrics):
        self.token = "sink-pytest-" + secrets.token_hex(4)
        self.points = []
        self.errors = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [manager.binary, "tail", "-json", "-token", self.token, manager.url, *metrics],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()
        # The manager logs "sink subscribed" after binding the sink's queue
        # to the metrics: from then on every point is queued for the sink.
        manager.wait_log(lambda line: 'msg="sink subscribed"' in line and f"token={self.token} " in line)

    def _read(self):
        for line in self.proc.stdout:
            p = json.loads(line)
            with self._cond:
                self.points.append((p["metric"], p["time"], p["value"]))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_errors(self):
        for line in self.proc.stderr:
            self.errors.append(line.rstrip("\n"))

    def collect(self, n, timeout=20, grace=0.2):
        """Waits for n points, then grace seconds more (to see duplicates),
        and returns all points received: (metric, time_ns, value)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.points) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"tail received {len(self.points)} of {n} points; stderr: {self.errors}"
                    )
                self._cond.wait(min(left, 0.5))
        time.sleep(grace)
        with self._cond:
            return list(self.points)

    def received(self):
        with self._cond:
            return list(self.points)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def tail(manager):
    """tail(metric, ...) -> a Tail subscribed to those metrics."""
    tails = []

    def start(*metrics):
        t = Tail(manager, metrics)
        tails.append(t)
        return t

    yield start
    for t in tails:
        t.close()


# --- sources -------------------------------------------------------------------


@pytest.fixture
def token(request):
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"source-pytest-{name}-{secrets.token_hex(4)}"


@pytest.fixture
def make_source(manager, url, token):
    """make_source(**kwargs) -> a connected SynchronousSource (closed after the test).

    raise_errors defaults to True here: most tests check the exception a
    failure maps to; test_reference.py checks the reference's default."""
    import libmetricq

    sources = []

    def make(**kwargs):
        kwargs.setdefault("timeout", 20)
        kwargs.setdefault("raise_errors", True)
        tok = kwargs.pop("token", None) or f"{token}-{len(sources)}"
        s = libmetricq.SynchronousSource(tok, kwargs.pop("url", url), **kwargs)
        sources.append(s)
        return s

    yield make
    for s in sources:
        s.close()


@pytest.fixture
def metric_prefix(token):
    """A metric name prefix unique to the test."""
    return "pytest." + token.removeprefix("source-pytest-").replace("-", "_") + "."


# --- the two ways of sending a point ----------------------------------------

# Set by `make test-python-run`: `make python` built libmetricq._fastsend in
# place, so the binding must use it; without it the fast variants skip.
EXPECT_FASTSEND = os.environ.get("LIBMETRICQ_EXPECT_FASTSEND") == "1"


def require_fastsend():
    """Skips when libmetricq._fastsend is not built, unless it is expected:
    then fails with the reason it does not import."""
    from libmetricq import _lib

    if _lib.FAST_SEND:
        return
    if not EXPECT_FASTSEND:
        pytest.skip("libmetricq._fastsend is not built (make python)")
    try:
        import libmetricq._fastsend  # noqa: F401
    except ImportError as e:
        pytest.fail(f"LIBMETRICQ_EXPECT_FASTSEND=1 but libmetricq._fastsend does not import: {e}")
    pytest.fail("LIBMETRICQ_EXPECT_FASTSEND=1 but libmetricq._fastsend imports and is not in use")


@pytest.fixture(params=["fast", "ctypes"])
def send_path(request, monkeypatch):
    """Runs a test with each mq_source_send (and mq_metric_send) the
    binding may call: the C extension's and the ctypes function."""
    from libmetricq import _lib, source

    if request.param == "fast":
        require_fastsend()
        from libmetricq import _fastsend

        assert source._send is _fastsend.send
        assert source._metric_send is _fastsend.metric_send
        assert source._Sender is _fastsend.Sender
    else:
        monkeypatch.setattr(source, "_send", _lib.mq_source_send)
        monkeypatch.setattr(source, "_metric_send", _lib.ctypes_metric_send)
        monkeypatch.setattr(source, "_Sender", None)
    return request.param


# --- the reference client, for discover and config RPCs ---------------------


@pytest.fixture
def reference_client(url, manager):
    """reference_client(target_token, configs=()) -> the reference metricq
    client's result (tests/interop/py_client.py): the target's discover
    replies and the replies to a "config" RPC per entry of configs."""

    def call(target, configs=()):
        configs_file = PACKAGE_DIR.parent.parent / "build" / f"py-client-{secrets.token_hex(4)}.json"
        configs_file.parent.mkdir(parents=True, exist_ok=True)
        configs_file.write_text(json.dumps(list(configs)))
        try:
            r = subprocess.run(
                [sys.executable, str(ROOT / "tests" / "interop" / "py_client.py"), url,
                 "client-pytest-" + secrets.token_hex(4), target, str(configs_file)],
                capture_output=True, text=True, timeout=90,
            )
        finally:
            configs_file.unlink()
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.splitlines()[-1])

    return call


# --- a TCP proxy in front of the broker, to take it away -------------------


class Proxy:
    """Forwards loopback connections to the broker until cut(): then every
    connection is closed and new ones are refused, as when the broker
    goes away."""

    def __init__(self, url):
        import socket
        import urllib.parse

        self._socket = socket
        parsed = urllib.parse.urlsplit(url)
        self._target = (parsed.hostname, parsed.port or 5672)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._conns = []
        self._lock = threading.Lock()
        self._cut = False
        port = self._listener.getsockname()[1]
        self.url = parsed._replace(netloc=f"{parsed.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}").geturl()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self._lock:
            self._cut = True
            conns, self._conns = self._conns, []
        try:
            self._listener.shutdown(self._socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        for c in conns:
            try:
                c.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


@pytest.fixture
def proxy(url):
    p = Proxy(url)
    yield p
    p.cut()
