"""SynchronousSource: a blocking MetricQ Source on top of libmetricq.so.

It mirrors ``metricq.SynchronousSource`` (same methods, arguments and
defaults) but runs no Python event loop: every call goes straight to the C
library, which does the AMQP work on its own threads. Calls release the GIL
while they are in the library, so sources can be used from several Python
threads at once.
"""

import array
import ctypes
import datetime as _dt
import json
import logging
import operator
import sys
import threading
import uuid
import warnings
import weakref

from . import _lib
from .exceptions import InvalidArgument, SourceStopped, error_for
from .timeseries import Timedelta, Timestamp

__all__ = ["SynchronousSource", "SourceMetric"]

logger = logging.getLogger("libmetricq")

# A non-blocking send passes the shortest timeout the C API accepts: the
# library only ever waits when its bounded buffer is full, so such a send
# either is accepted at once or fails (MQ_ERR_TIMEOUT) at once.
_NOWAIT = 1e-9
# timeout=None: "no limit", about 31 years (the C API needs a finite value).
_FOREVER = 1e9

# Metric names encoded once: str -> UTF-8 bytes. Shared by all sources;
# cleared when it grows beyond _NAMES_MAX (names are cheap to re-encode).
_names = {}
_names_get = _names.get
_NAMES_MAX = 1 << 16

_send = _lib.send
_send_batch = _lib.mq_source_send_batch
_metric_send = _lib.metric_send
_metric_send_batch = _lib.mq_metric_send_batch
_Sender = _lib.Sender
_SEND_TIMEOUT = 60.0
_ArgumentError = ctypes.ArgumentError
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _encode_name(metric):
    """UTF-8 bytes of a metric name (cached). The library checks the rest."""
    if not isinstance(metric, str):
        raise TypeError(f"metric name must be a str, got {type(metric).__name__}")
    try:
        name = metric.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"bad metric name {metric!r}: not encodable as UTF-8: {e}") from None
    if b"\0" in name:
        raise InvalidArgument(f"bad metric name {metric!r}: contains a NUL character")
    if len(_names) >= _NAMES_MAX:
        _names.clear()
    _names[metric] = name
    return name


def _c_string(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    data = value.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise InvalidArgument(f"{what} contains a NUL character")
    return data


def _to_ns(time):
    """Nanoseconds since the epoch from an int, a Timestamp (also
    metricq.Timestamp) or an aware datetime."""
    if type(time) is int:
        return time
    if isinstance(time, Timestamp):
        return time._value
    if isinstance(time, _dt.datetime):
        return Timestamp.from_datetime(time)._value
    if isinstance(time, (float, bool)):
        raise TypeError(
            f"time must be int nanoseconds, a Timestamp or an aware datetime, got {type(time).__name__} "
            "(for float seconds use Timestamp.from_posix_seconds)"
        )
    ns = getattr(time, "posix_ns", None)  # metricq.Timestamp
    if ns is not None:
        return int(ns)
    try:
        return operator.index(time)  # e.g. numpy.int64
    except TypeError:
        raise TypeError(
            f"time must be int nanoseconds, a Timestamp or an aware datetime, got {type(time).__name__}"
        ) from None


def _timeout(timeout):
    if timeout is None:
        return _FOREVER
    if isinstance(timeout, Timedelta):
        return timeout.s
    return float(timeout)


def _json_default(obj):
    if isinstance(obj, Timedelta):
        return obj.precise_string
    if isinstance(obj, Timestamp):
        return obj.posix_ns
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serializable")


def _describe(metrics):
    """The metric names of a declare_metrics argument for a log line,
    whatever it is."""
    try:
        if not isinstance(metrics, str):
            return list(metrics.keys() if hasattr(metrics, "keys") else metrics)
    except Exception:
        pass
    return repr(metrics)


def _check_name(name):
    # What JSON could carry but a send (a C string) could not.
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a str, got {type(name).__name__}")
    if "\0" in name:
        raise InvalidArgument(f"bad metric name {name!r}: contains a NUL character")


def _metrics_json(metrics):
    """JSON for mq_source_declare_many: an object {name: metadata or null}
    for a mapping, an array of names for any other iterable."""
    if isinstance(metrics, str):
        raise TypeError("declare_metrics needs a mapping or a list of metric names, not a single str")
    if hasattr(metrics, "keys"):
        payload = {}
        for name in metrics.keys():
            _check_name(name)
            metadata = metrics[name]
            if metadata is not None and not hasattr(metadata, "keys"):
                raise TypeError(f"metadata of {name!r} must be a dict or None, got {type(metadata).__name__}")
            payload[name] = None if metadata is None else dict(metadata)
        names = list(payload)
    else:
        names = list(metrics)
        for name in names:
            _check_name(name)
        payload = names
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False, default=_json_default)
    except ValueError as e:
        raise InvalidArgument(f"metadata is not valid JSON: {e}") from None
    try:
        return text.encode("utf-8"), names
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"metric names or metadata not encodable as UTF-8: {e}") from None


# --- batches -----------------------------------------------------------------


def _numpy():
    # numpy is optional: an ndarray can only be passed in if numpy was
    # imported, so there is no need to import it here.
    return sys.modules.get("numpy")


def _times_buffer(times):
    """(address, keep-alive object, count) of int64 nanoseconds.

    Zero-copy for a C-contiguous 1-D numpy int64 array (native byte order)
    and for array.array('q'); other inputs are converted."""
    np = _numpy()
    if np is not None and isinstance(times, np.ndarray):
        if times.ndim != 1:
            raise InvalidArgument(f"times must be a 1-D array, got {times.ndim} dimensions")
        kind = times.dtype.kind
        if kind == "M":  # datetime64: to ns since the epoch
            times = times.astype("datetime64[ns]", copy=False).view(np.int64)
        elif kind not in "iu":
            raise TypeError(
                f"times must be an integer (nanoseconds) or datetime64 array, got dtype {times.dtype}"
            )
        arr = np.ascontiguousarray(times, dtype=np.int64)
        return arr.ctypes.data, arr, arr.shape[0]
    if isinstance(times, array.array) and times.typecode in "ql" and times.itemsize == 8:
        # The memoryview stops other threads from resizing (moving) the
        # array while the library reads it without the GIL.
        view = memoryview(times)
        return times.buffer_info()[0], view, len(times)
    if not isinstance(times, (list, tuple, range)):
        times = list(times)
    try:
        arr = array.array("q", times)
    except TypeError:
        arr = array.array("q", [_to_ns(t) for t in times])
    return arr.buffer_info()[0], arr, len(arr)


def _values_buffer(values):
    """(address, keep-alive object, count) of float64 values; zero-copy for a
    C-contiguous 1-D numpy float64 array and array.array('d')."""
    np = _numpy()
    if np is not None and isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InvalidArgument(f"values must be a 1-D array, got {values.ndim} dimensions")
        if values.dtype.kind not in "fiu":
            raise TypeError(f"values must be a numeric array, got dtype {values.dtype}")
        arr = np.ascontiguousarray(values, dtype=np.float64)
        return arr.ctypes.data, arr, arr.shape[0]
    if isinstance(values, array.array) and values.typecode == "d":
        view = memoryview(values)  # no resizing during the call, as above
        return values.buffer_info()[0], view, len(values)
    if not isinstance(values, (list, tuple, range)):
        values = list(values)
    arr = array.array("d", values)
    return arr.buffer_info()[0], arr, len(arr)


# --- chunk sizes -----------------------------------------------------------


def _chunk_size_arg(chunk_size):
    """Python's chunk size (None: automatic chunking off, else >= 1) to the C one (0: off)."""
    if chunk_size is None:
        return 0
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError("chunk_size must be None or a positive integer")
    if chunk_size < 1:
        raise InvalidArgument(f"chunk_size must be at least 1, or None to flush by hand ({chunk_size} < 1)")
    return chunk_size


def _point(time, value):
    """A point's time and value as the C API takes them, converted
    explicitly (for what the fast path leaves to ctypes)."""
    time = _to_ns(time)
    if not _INT64_MIN <= time <= _INT64_MAX:  # ctypes would wrap it silently
        raise InvalidArgument(f"time {time} is out of the int64 nanosecond range")
    try:
        return time, float(value)
    except (TypeError, ValueError):
        raise TypeError(f"value must be a number, got {type(value).__name__}") from None


def _batch(metric, times, values):
    """send_batch's arrays as addresses, their count and what keeps them
    alive."""
    tptr, tkeep, n = _times_buffer(times)
    vptr, vkeep, m = _values_buffer(values)
    if n != m:
        raise InvalidArgument(f"send_batch({metric!r}): {n} times but {m} values")
    return tptr, vptr, n, (tkeep, vkeep)


class SourceMetric:
    """One metric of a source, as ``source["name"]`` or
    ``source.metric("name")``: its chunk size, and sends by the library's
    handle of the metric, which skip the look-up by name (the fastest
    per-point send).

    ``send(time, value, block=True, timeout=60.0)`` is
    ``source.send(metric, time, value, block, timeout)``, with the same
    rules, errors and logging. Once the metric has its handle (from its
    first send, or ``source.metric``) and where the binding's C extension
    is built, ``send`` is a C callable that sends ``send(int_ns, number)``
    without running any Python code, and hands every other call to the
    full send."""

    __slots__ = ("id", "_source", "_name", "_chunk_size", "_fixed", "_handle", "send")

    def __init__(self, source, metric):
        self.id = metric
        self._source = source
        self._name = _names_get(metric) or _encode_name(metric)
        # As in the library: a metric takes the source's chunk size when it
        # is declared, unless it was given one of its own.
        self._chunk_size = None
        self._fixed = False
        self._handle = None  # mq_source_metric's, made by the first send
        self.send = self._send

    def _bind(self):
        """The library's handle of the metric (mq_source_metric). It stays
        valid until the source is freed; sends by it after that fail with
        SourceStopped, as the library checks every handle."""
        handle = _lib.mq_source_metric(self._source._h, self._name)
        if not handle:
            raise self._source._error(_lib.ERR_INVALID)
        self._handle = handle
        if _Sender is not None:
            self.send = _Sender(handle, _SEND_TIMEOUT, self._send, self._refused)
        return handle

    def _refused(self, status):
        """What the C send does with a point the library refused."""
        self._source._send_failed(self.id, self._source._error(status), True)

    @property
    def chunk_size(self):
        """Points collected into a chunk before it is sent; None: only on
        flush(). Until the metric is declared (or set), the source's."""
        return self._chunk_size if self._fixed else self._source._chunk_size

    @chunk_size.setter
    def chunk_size(self, chunk_size):
        n = _chunk_size_arg(chunk_size)
        self._source._check(_lib.mq_source_set_chunk_size(self._source._h, self._name, n))
        self._chunk_size = chunk_size
        self._fixed = True

    def _declared(self):
        if not self._fixed:
            self._chunk_size = self._source._chunk_size
            self._fixed = True

    def _send(self, time, value, block=True, timeout=_SEND_TIMEOUT):
        """send in Python: every call until the metric has its handle, and
        the calls the C send leaves to it."""
        try:
            if type(time) is not int:
                time = _to_ns(time)
            status = _metric_send(self._handle or self._bind(), time, value, timeout if block else _NOWAIT)
        except _ArgumentError:
            # ctypes refused an argument: convert each one explicitly.
            try:
                time, value = _point(time, value)
                status = _metric_send(self._handle, time, value, _timeout(timeout) if block else _NOWAIT)
            except Exception as e:
                self._source._send_failed(self.id, e, block)
                return
        except OverflowError:
            self._source._send_failed(
                self.id, InvalidArgument(f"time {time} is out of the int64 nanosecond range"), block
            )
            return
        except Exception as e:
            self._source._send_failed(self.id, e, block)
            return
        if status:
            self._source._send_failed(self.id, self._source._error(status), block)

    def send_batch(self, times, values, timeout=60.0):
        """``source.send_batch(metric, times, values, timeout)``, by the
        metric's handle."""
        try:
            tptr, vptr, n, _keep = _batch(self.id, times, values)
            status = _metric_send_batch(self._handle or self._bind(), tptr, vptr, n, _timeout(timeout))
            if status:
                raise self._source._error(status)
        except Exception as e:
            self._source._failed("send_batch", repr(self.id), e)

    def __repr__(self):
        return f"SourceMetric({self.id!r}, chunk_size={self.chunk_size!r})"


def _free(handle, closed, _keep):
    # The finalizer of a SynchronousSource: stops it (flushing for at most
    # 10 seconds) and releases the handle. Runs at close(), when the object
    # is collected, or at interpreter exit. closed is the source's flag;
    # _keep holds the configuration callback until the handle is gone.
    closed[0] = True
    _lib.mq_source_free(handle)


def _seconds_arg(value, name):
    """Seconds (a number or a Timedelta) > 0 for a keyword argument; the
    error names the argument."""
    if isinstance(value, Timedelta):
        value = value.s
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a Timedelta, got {type(value).__name__}")
    if not 0 < value < float("inf"):
        raise InvalidArgument(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _reference_identity(token, url, management_url, add_uuid):
    """(token, url) from the reference's Agent arguments: url positional or
    keyword, management_url its deprecated alias, add_uuid a random suffix
    for transient clients."""
    if management_url is not None:
        warnings.warn(
            "using deprecated 'management_url' argument, please use 'url' instead",
            DeprecationWarning,
            stacklevel=3,
        )
        if url is not None:
            raise TypeError("cannot use both 'url' and 'management_url', use only 'url'")
        url = management_url
    if url is None:
        raise TypeError("missing required argument 'url'")
    if not isinstance(add_uuid, bool):
        raise TypeError(f"add_uuid must be True or False, got {type(add_uuid).__name__}")
    if add_uuid:
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        token = f"{token}.{uuid.uuid4().hex}"
    return token, url


class SynchronousSource:
    """A MetricQ Source for synchronous code, like ``metricq.SynchronousSource``.

    Connects to the broker at ``url``, registers ``token`` with the manager
    and returns once the source is ready; raises if it is not within
    ``timeout`` seconds (:class:`TimeoutError`) or cannot be (a
    :class:`~libmetricq.MetricQError`).

    Arguments of the reference (``metricq.Source``'s, which the reference
    SynchronousSource passes on):
        token, url: positional or keyword.
        client_version: the version reported to the manager's "discover"
            (default: none).
        add_uuid: True appends ``"." + a random UUID`` to the token, for
            transient sources without a configuration of their own.
        connection_timeout: seconds (or a Timedelta) a lost connection may
            stay down before the source stops itself (default 600).
        management_url: deprecated alias of ``url`` (DeprecationWarning).

    Keyword Args (beyond the reference):
        timeout: seconds to wait for the source to become ready (default 60).
        chunk_size: the default chunk size, as the :attr:`chunk_size`
            property (default 1; None: points go out on :meth:`flush` only).
        max_buffered: bound of points accepted but not yet confirmed by the
            broker (default 1048576, or twice the declared metrics'
            chunk sizes if that is more); a send that finds the buffer
            full waits up to its timeout for space.
        heartbeat: the AMQP heartbeat of both connections, whole seconds
            (or a Timedelta) from 1 to 65535 (default 6). A silent peer is
            noticed after about 1.5 intervals: shorter notices a dead
            network sooner, at a few bytes per interval and the risk of
            giving up on a broker that is merely stalled.
        config_handler: ``handler(source, config)``, called with the
            configuration (a dict) the manager sends: once while connecting
            (before the constructor returns) and on every later "config"
            RPC, on a library thread. It may call :meth:`declare_metrics`
            and set chunk sizes, but not :meth:`stop`. Raising an exception
            refuses the configuration (a refused first configuration makes
            the constructor fail with :class:`~libmetricq.RPCError`).
        raise_errors: False (the default, as the reference): a failure of
            :meth:`send`, :meth:`send_batch`, :meth:`declare_metrics`,
            :meth:`flush` or :meth:`stop` other than a timeout is logged to
            the ``libmetricq`` logger (with the metric and the reason) and
            the call returns; only :class:`TimeoutError` is raised. True:
            every failure raises its :class:`~libmetricq.MetricQError`.

    With ``block=False``, :meth:`send` never waits (it fails at once when the
    buffer is full) and :meth:`declare_metrics`, :meth:`flush` and
    :meth:`stop` run in a background thread; the call returns at once and
    any failure is logged.

    Use it as a context manager to stop (flush) and close it at the end of
    a ``with`` block. A source that is not closed is stopped, flushing for
    up to 10 seconds, when it is garbage collected or the interpreter exits.
    """

    def __init__(
        self,
        token,
        url=None,
        *,
        client_version=None,
        add_uuid=False,
        connection_timeout=None,
        management_url=None,
        timeout=60.0,
        chunk_size=_lib.DEFAULT_CHUNK_SIZE,
        max_buffered=None,
        heartbeat=None,
        config_handler=None,
        raise_errors=False,
    ):
        self._h = None
        self._closed_flag = [False]  # shared with the finalizer
        token, url = _reference_identity(token, url, management_url, add_uuid)
        self._token = token
        self._raise_errors = bool(raise_errors)
        self._metrics = {}
        self._metrics_lock = threading.Lock()
        # metric -> its handle's C send, made after the metric's first
        # accepted point, so that send(metric, ...) skips the name look-up
        # and its Python error handling for every later point.
        self._senders = {}
        chunk = _chunk_size_arg(chunk_size)
        url_b = _c_string(url, "url")
        token_b = _c_string(token, "token")
        version_b = None if client_version is None else _c_string(client_version, "client_version")
        reconnect = None if connection_timeout is None else _seconds_arg(connection_timeout, "connection_timeout")
        beat = None if heartbeat is None else _seconds_arg(heartbeat, "heartbeat")
        callback = self._config_callback(config_handler) if config_handler is not None else None
        handle = _lib.mq_source_create(url_b, token_b)
        if not handle:
            raise InvalidArgument(_lib.last_error())
        self._h = handle
        self._chunk_size = chunk_size
        self._finalizer = weakref.finalize(self, _free, handle, self._closed_flag, callback)
        try:
            if max_buffered is not None:
                if isinstance(max_buffered, bool) or not isinstance(max_buffered, int):
                    raise TypeError("max_buffered must be a positive integer")
                self._check(_lib.mq_source_set_max_buffered(handle, max_buffered))
            if chunk != _lib.DEFAULT_CHUNK_SIZE:
                self._check(_lib.mq_source_set_chunk_size(handle, None, chunk))
            if version_b is not None:
                self._check(_lib.mq_source_set_client_version(handle, version_b), "client_version")
            if reconnect is not None:
                self._check(_lib.mq_source_set_reconnect_timeout(handle, reconnect), "connection_timeout")
            if beat is not None:
                self._check(_lib.mq_source_set_heartbeat(handle, beat), "heartbeat")
            if callback is not None:
                self._check(_lib.mq_source_set_config_handler(handle, _lib.fn_address(callback), None))
            self._check(_lib.mq_source_connect(handle, _timeout(timeout)))
        except BaseException:
            self.close()
            raise
        logger.debug("source %s ready", token)

    # --- helpers -----------------------------------------------------------

    def _error(self, status):
        """The exception for a failed call; reads this thread's mq_last_error()."""
        if status == _lib.ERR_INVALID and self._closed_flag[0]:
            return SourceStopped(f"the source {self._token} was closed")
        return error_for(status)

    def _check(self, status, argument=None):
        if status:
            err = self._error(status)
            if argument is not None:
                err.args = (f"{argument}: {err}",)
            raise err

    def _failed(self, what, metric, err):
        """A failure of a data call: raised when the caller asked for
        exceptions or it is a timeout (as in the reference), else logged
        with the metric and the reason."""
        if self._raise_errors or isinstance(err, TimeoutError):
            raise err
        logger.error("%s of %s on %s failed: %s", what, metric, self._token, err)

    def _config_callback(self, handler):
        if not callable(handler):
            raise TypeError("config_handler must be callable as handler(source, config)")
        # Not self: the callback must not keep the source alive.
        ref = weakref.ref(self)
        token = self._token

        def on_config(_src, config_json, _user):
            # Never let an exception cross into the library: ctypes would
            # print it and return 0, accepting the configuration.
            try:
                source = ref()
                if source is None:
                    return 0
                handler(source, json.loads(config_json.decode("utf-8")))
                return 0
            except BaseException:
                logger.exception("config handler of %s failed: configuration refused", token)
                return -1

        return _lib.CONFIG_FN(on_config)

    def _background(self, what, metric, fn):
        def run():
            try:
                fn()
            except Exception as e:
                logger.error("%s of %s on %s failed: %s", what, metric, self._token, e)

        threading.Thread(target=run, name=f"libmetricq-{what}", daemon=True).start()

    # --- the API of metricq.SynchronousSource --------------------------------

    def send(self, metric, time, value, block=True, timeout=_SEND_TIMEOUT):
        """Sends one data point.

        Args:
            metric: the metric's name (declared before).
            time: int nanoseconds since the epoch, a :class:`Timestamp` or an
                aware :class:`datetime.datetime`.
            value: a number.
            block: True: wait (up to ``timeout``) when the buffer is full.
                False: never wait; a failure is logged, never raised.
            timeout: seconds; the send waits only when the buffer is full.

        Raises:
            TimeoutError: the buffer stayed full for ``timeout`` seconds.
            With raise_errors=True also UndeclaredMetric, OrderError,
            InvalidArgument, SourceStopped, PublishFailed. Otherwise these
            are logged. Either way the point was not accepted: sending it
            again creates no duplicate.
        """
        if block is True and timeout is _SEND_TIMEOUT and type(metric) is str:
            sender = self._senders.get(metric)
            if sender is not None:
                return sender(time, value)
        try:
            name = _names_get(metric) or _encode_name(metric)
            if type(time) is not int:
                time = _to_ns(time)
            if not _INT64_MIN <= time <= _INT64_MAX:  # ctypes would wrap it silently
                raise InvalidArgument(f"time {time} is out of the int64 nanosecond range")
            status = _send(self._h, name, time, value, timeout if block else _NOWAIT)
            if not status and _Sender is not None and metric not in self._senders:
                self._senders[metric] = self.metric(metric).send
        except _ArgumentError:
            # ctypes refused an argument: convert each one explicitly.
            status = self._send_converted(metric, time, value, block, timeout)
        except Exception as e:
            self._send_failed(metric, e, block)
            return
        if status:
            self._send_failed(metric, self._error(status), block)

    def _send_failed(self, metric, err, block):
        if block:
            self._failed("send", repr(metric), err)
        else:
            logger.error("send of %r on %s failed: %s", metric, self._token, err)

    def _send_converted(self, metric, time, value, block, timeout):
        try:
            name = _names_get(metric) or _encode_name(metric)
            time, value = _point(time, value)
            return _send(self._h, name, time, value, _timeout(timeout) if block else _NOWAIT)
        except Exception as e:
            self._send_failed(metric, e, block)
            return 0

    def send_batch(self, metric, times, values, timeout=60.0):
        """Sends points of one metric at once: all are accepted, or none.

        ``times`` (int nanoseconds, Timestamps or aware datetimes; or a numpy
        integer or datetime64 array) must strictly increase. ``values`` are
        numbers (or a numpy array). C-contiguous 1-D numpy arrays of dtype
        int64 and float64 (and ``array.array('q')``/``('d')``) are passed to
        the library without copying; anything else is converted first (a
        copy). Waits (up to ``timeout``) only when the buffer is full.

        Raises: as :meth:`send` with block=True; with raise_errors=True
        InvalidArgument also for arrays of different lengths.
        """
        try:
            name = _names_get(metric) or _encode_name(metric)
            tptr, vptr, n, _keep = _batch(metric, times, values)
            status = _send_batch(self._h, name, tptr, vptr, n, _timeout(timeout))
            if status:
                raise self._error(status)
        except Exception as e:
            self._failed("send_batch", repr(metric), e)

    def declare_metrics(self, metrics, block=True, timeout=60.0):
        """Declares metrics: a mapping ``{name: metadata dict or None}`` or a
        list of names. A metric must be declared before points are sent.
        With block=False, returns at once and logs a failure.

        Raises:
            TimeoutError: the manager did not answer within ``timeout``.
            Other failures raise only with raise_errors=True, else are logged.
        """
        try:
            text, names = _metrics_json(metrics)
        except Exception as e:
            if block:
                self._failed("declare_metrics", _describe(metrics), e)
            else:
                logger.error("declare_metrics of %s on %s failed: %s", _describe(metrics), self._token, e)
            return
        self._track(names)
        if not block:
            self._background("declare_metrics", names, lambda: self._declare(text, timeout))
            return
        try:
            self._declare(text, timeout)
        except Exception as e:
            self._failed("declare_metrics", names, e)

    def _declare(self, text, timeout):
        self._check(_lib.mq_source_declare_many(self._h, text, _timeout(timeout)))

    def _track(self, names):
        # A metric takes the source's chunk size when it is first declared.
        with self._metrics_lock:
            for name in names:
                m = self._metrics.get(name)
                if m is None:
                    try:
                        m = self._metrics[name] = SourceMetric(self, name)
                    except ValueError:
                        continue  # a bad name: the library says so
                m._declared()

    def flush(self, timeout=60.0, block=True):
        """Returns once every point accepted before the call has been handed
        to the broker. Needed to send points when chunk_size is None.
        With block=False, returns at once and logs a failure. Raises as
        :meth:`declare_metrics`."""
        if not block:
            self._background("flush", "all metrics", lambda: self._check(_lib.mq_source_flush(self._h, _timeout(timeout))))
            return
        try:
            self._check(_lib.mq_source_flush(self._h, _timeout(timeout)))
        except Exception as e:
            self._failed("flush", "all metrics", e)

    def stop(self, timeout=60.0, block=True):
        """Flushes (within timeout) and disconnects. Idempotent (:attr:`stats`
        stays readable until :meth:`close`); later data calls fail with
        SourceStopped. With block=False, returns at once and logs a
        failure. Raises as :meth:`declare_metrics`."""
        logger.debug("stopping source %s", self._token)
        if not block:
            self._background("stop", "all metrics", lambda: self._check(_lib.mq_source_stop(self._h, _timeout(timeout))))
            return
        try:
            self._check(_lib.mq_source_stop(self._h, _timeout(timeout)))
        except Exception as e:
            self._failed("stop", "all metrics", e)

    def wait(self, timeout=None):
        """Blocks until the source has stopped, or ``timeout`` seconds
        (None: no limit) passed; sends nothing. Returns None when it was
        stopped by :meth:`stop` or :meth:`close`; raises the cause when it
        stopped on its own (e.g. :class:`~libmetricq.ConnectFailed` once a
        lost connection stayed down for connection_timeout), and
        :class:`TimeoutError` while it still runs. Always raises (the
        answer is the point of the call)."""
        if self._closed_flag[0]:
            return
        self._check(_lib.mq_source_wait(self._h, _timeout(timeout)))

    def close(self):
        """Stops the source if needed (flushing for at most 10 seconds) and
        releases it. Idempotent. Later calls raise SourceStopped."""
        self._finalizer()

    @property
    def closed(self):
        """True once the source was closed (close(), the end of a with block, or interpreter exit)."""
        return self._closed_flag[0]

    @property
    def chunk_size(self):
        """Points collected per metric into a chunk before it is sent.

        1 at first (every point goes out at once); None: automatic chunking
        off, points go out on :meth:`flush`. A new value applies to metrics
        declared afterwards; ``source["metric"].chunk_size`` sets one metric's.
        """
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, chunk_size):
        n = _chunk_size_arg(chunk_size)
        self._check(_lib.mq_source_set_chunk_size(self._h, None, n))
        self._chunk_size = chunk_size

    def __getitem__(self, metric):
        """The :class:`SourceMetric` of a metric, for its chunk size."""
        with self._metrics_lock:
            m = self._metrics.get(metric)
            if m is None:
                m = self._metrics[metric] = SourceMetric(self, metric)
            return m

    def metric(self, metric):
        """The :class:`SourceMetric` of a metric (as ``source[metric]``),
        bound to the library's handle of it: its ``send`` and
        ``send_batch`` skip the look-up by name, the fastest way to send.
        The metric need not be declared yet (sends fail as undeclared until
        it is). Raises InvalidArgument for a bad name, SourceStopped once
        the source is closed."""
        m = self[metric]
        if m._handle is None:
            m._bind()
        return m

    @property
    def config(self):
        """The configuration the manager sent (at registration, or the latest
        "config" RPC), as a dict."""
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = _lib.mq_source_config(self._h, buf, size)
            if n < 0:
                raise self._error(n)
            if n < size:
                return json.loads(buf.raw[:n].decode("utf-8"))
            size = n + 1

    @property
    def stats(self):
        """The library's counters for this source (points accepted,
        published, confirmed, ...), as a dict."""
        st = _lib.mq_stats()
        self._check(_lib.mq_source_stats(self._h, ctypes.byref(st), ctypes.sizeof(st)))
        return {name: getattr(st, name) for name, _ in _lib.mq_stats._fields_}

    @property
    def token(self):
        return self._token

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.stop()
            else:
                try:
                    self.stop()
                except Exception as e:
                    logger.error("stopping %s after an exception failed: %s", self._token, e)
        finally:
            self.close()
        return False

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<libmetricq.SynchronousSource {self._token!r} {state}>"
