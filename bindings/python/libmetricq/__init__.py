"""libmetricq: a MetricQ Source for Python, on the libmetricq C library.

    import libmetricq

    with libmetricq.SynchronousSource(token="source-example", url="amqp://localhost/") as source:
        source.declare_metrics({"example.temperature": {"unit": "C", "rate": 1}})
        source.send("example.temperature", libmetricq.Timestamp.now(), 21.5)

The API follows ``metricq.SynchronousSource`` (plus ``send_batch`` and
``flush``), and :class:`Source` and :class:`IntervalSource` are there to
subclass as in ``metricq``, synchronously; times are int nanoseconds, :class:`Timestamp` or aware
``datetime`` objects. As in the reference, a failed send, declare, flush
or stop is logged to the logger ``libmetricq`` and only :class:`TimeoutError`
is raised; ``raise_errors=True`` makes every failure raise its
:class:`MetricQError` subclass. The C library's log lines go to the logger
``libmetricq.core`` (see :func:`set_log_level`).
"""

import atexit as _atexit
import logging as _logging
import time as _time

from . import _lib
from .exceptions import (
    ConnectFailed,
    InternalError,
    InvalidArgument,
    MetricQError,
    OrderError,
    PublishFailed,
    RPCError,
    SourceStopped,
    Timeout,
    UndeclaredMetric,
)
from .agent import IntervalSource, Source, rpc_handler
from .source import SourceMetric, SynchronousSource
from .timeseries import Timedelta, Timestamp

__version__ = "0.1.0"

#: Where the C library was loaded from.
LIBRARY_PATH = _lib.LIBRARY_PATH

__all__ = [
    "SynchronousSource",
    "Source",
    "IntervalSource",
    "rpc_handler",
    "SourceMetric",
    "Timestamp",
    "Timedelta",
    "MetricQError",
    "InvalidArgument",
    "Timeout",
    "ConnectFailed",
    "RPCError",
    "UndeclaredMetric",
    "OrderError",
    "PublishFailed",
    "SourceStopped",
    "InternalError",
    "library_version",
    "now",
    "set_log_level",
    "route_library_logs",
    "LIBRARY_PATH",
]


def library_version():
    """The C library's version string, e.g. ``"libmetricq/0.1.0"``."""
    return _lib.VERSION


def now():
    """The library's clock: int nanoseconds since the epoch (as Timestamp.now().posix_ns)."""
    return _lib.mq_now()


def set_log_level(level):
    """Sets the least level of the C library's log lines: a ``logging`` level
    (``logging.DEBUG`` ... ``logging.ERROR``, or their names) or ``None`` for
    none at all. The initial level is WARNING, or what the environment
    variable METRICQ_LOG (debug, info, warn, error, off) says."""
    if level is None:
        code = _lib.LOG_OFF
    else:
        if isinstance(level, str):
            resolved = _logging.getLevelName(level.upper())
            if not isinstance(resolved, int):
                raise ValueError(f"unknown log level {level!r}")
            level = resolved
        if level <= _lib.LOG_DEBUG:
            code = _lib.LOG_DEBUG
        elif level <= _lib.LOG_INFO:
            code = _lib.LOG_INFO
        elif level <= _lib.LOG_WARN:
            code = _lib.LOG_WARN
        elif level <= _lib.LOG_ERROR:
            code = _lib.LOG_ERROR
        else:
            code = _lib.LOG_OFF
    if _lib.mq_set_log_level(code):
        raise InvalidArgument(_lib.last_error())


# --- the C library's log lines into Python's logging ------------------------
#
# The library calls the handler from its own threads; the ctypes callback
# takes the GIL for the call. No library call made from Python holds the GIL
# (CDLL releases it), so a library thread waiting for the GIL never waits
# for a thread that waits for the library. At exit the handler is removed
# before the interpreter finalizes, so no library thread enters Python then.

_core_logger = _logging.getLogger("libmetricq.core")


def _on_log(level, message, _user):
    try:
        _core_logger.log(level, "%s", message.decode("utf-8", "replace"))
    except BaseException:  # never into the library
        pass


_LOG_CALLBACK = _lib.LOG_FN(_on_log)
_routed = False


def route_library_logs(enable=True):
    """enable=True (the default at import): the C library's log lines go to
    the ``libmetricq.core`` logger. False: to stderr, as the library does
    without a handler."""
    global _routed
    if enable:
        _lib.mq_set_log_handler(_lib.fn_address(_LOG_CALLBACK), None)
    else:
        _lib.mq_set_log_handler(None, None)
    _routed = enable


@_atexit.register
def _unroute_at_exit():
    # Sources not closed are stopped by their finalizers, also at exit;
    # whether before or after this, their lines go to logging or stderr.
    if _routed:
        _lib.mq_set_log_handler(None, None)
        # Let a library thread that already entered the handler finish.
        _time.sleep(0.005)


route_library_logs(True)
