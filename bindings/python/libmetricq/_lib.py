"""Loading libmetricq.so and declaring the prototypes of include/metricq.h.

The library is looked for, in this order:

1. the copy bundled with the package (``libmetricq/_lib/libmetricq.so.0``);
2. ``LIBMETRICQ_PATH``: the library file itself, or a directory holding
   ``libmetricq.so.0`` (or ``libmetricq.so``);
3. the system's library search path (``ctypes.util.find_library``, then
   ``libmetricq.so.0``).

Right after loading, ``mq_version()`` must start with ``libmetricq/0.``: the
0.x series keeps the C contract this module was written against.

The functions are loaded from a ``ctypes.CDLL``, which releases the GIL for
the duration of every call: a send that waits for buffer space, a flush or
a stop blocks only the calling Python thread. (So does the C extension
_fastsend, when it calls mq_source_send.)
"""

import ctypes
import ctypes.util
import os
from ctypes import CFUNCTYPE, POINTER, c_char_p, c_double, c_int, c_int64, c_size_t, c_uint64, c_void_p

# Version of include/metricq.h this module follows (MQ_VERSION_*).
VERSION_MAJOR = 0
VERSION_MINOR = 1
VERSION_PATCH = 0
VERSION_STRING = "0.1.0"
HEADER_VERSION = VERSION_STRING
_VERSION_PREFIX = "libmetricq/0."

# Status codes (MQ_OK, MQ_ERR_*).
OK = 0
ERR_INVALID = -1
ERR_TIMEOUT = -2
ERR_CONNECT = -3
ERR_RPC = -4
ERR_UNDECLARED = -5
ERR_ORDER = -6
ERR_PUBLISH = -7
ERR_STOPPED = -8
ERR_INTERNAL = -9

DEFAULT_TIMEOUT = 60.0
DEFAULT_CHUNK_SIZE = 1
DEFAULT_MAX_BUFFERED = 1048576
MAX_NAME_LENGTH = 255

# MQ_LOG_*: the same numbers as the logging module's levels.
LOG_DEBUG = 10
LOG_INFO = 20
LOG_WARN = 30
LOG_ERROR = 40
LOG_OFF = 100

_SONAME = "libmetricq.so.0"
_BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib", _SONAME)


class mq_stats(ctypes.Structure):
    _fields_ = [
        (name, c_uint64)
        for name in (
            "points_accepted",
            "points_published",
            "points_confirmed",
            "chunks_published",
            "chunks_confirmed",
            "bytes_published",
            "buffered_points",
            "reconnects",
            "publish_errors",
            "buffer_full_waits",
            "blocked_events",
            "blocked",
            "chunks_republished",
            "buffer_full_timeouts",
            "points_dropped",
            "management_reconnects",
            "data_connected",
            "management_connected",
        )
    ]


CONFIG_FN = CFUNCTYPE(c_int, c_void_p, c_char_p, c_void_p)
UPDATE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p)
LOG_FN = CFUNCTYPE(None, c_int, c_char_p, c_void_p)


def _candidates():
    """Yields (path or name, where it came from)."""
    if os.path.exists(_BUNDLED):
        yield _BUNDLED, "bundled with the package"
        return
    env = os.environ.get("LIBMETRICQ_PATH", "").strip()
    if env:
        if os.path.isdir(env):
            for name in (_SONAME, "libmetricq.so"):
                path = os.path.join(env, name)
                if os.path.exists(path):
                    yield os.path.abspath(path), "LIBMETRICQ_PATH"
                    return
            raise ImportError(
                f"libmetricq: LIBMETRICQ_PATH={env!r} is a directory without {_SONAME} or libmetricq.so"
            )
        yield env, "LIBMETRICQ_PATH"
        return
    found = ctypes.util.find_library("metricq")
    if found:
        yield found, "the system library path"
    yield _SONAME, "the system library path"


def _load():
    errors = []
    for path, origin in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append(f"{path} ({origin}): {e}")
    raise ImportError(
        "libmetricq: cannot load the C library libmetricq.so: "
        + "; ".join(errors)
        + ". Install it (make install), or set LIBMETRICQ_PATH to the library file or its directory."
    )


lib, LIBRARY_PATH = _load()


def _proto(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


mq_version = _proto("mq_version", c_char_p)

VERSION = mq_version().decode("utf-8", "replace")
if not VERSION.startswith(_VERSION_PREFIX):
    raise ImportError(
        f"libmetricq: {LIBRARY_PATH} is {VERSION!r}, but this package needs {_VERSION_PREFIX}x "
        f"(it follows metricq.h {HEADER_VERSION})"
    )

mq_strerror = _proto("mq_strerror", c_char_p, c_int)
mq_last_error = _proto("mq_last_error", c_char_p)
mq_now = _proto("mq_now", c_int64)

mq_source_new = _proto("mq_source_new", c_void_p, c_char_p, c_char_p, c_double)
mq_source_create = _proto("mq_source_create", c_void_p, c_char_p, c_char_p)
mq_source_connect = _proto("mq_source_connect", c_int, c_void_p, c_double)
mq_source_set_max_buffered = _proto("mq_source_set_max_buffered", c_int, c_void_p, c_int64)
mq_source_set_client_version = _proto("mq_source_set_client_version", c_int, c_void_p, c_char_p)
mq_source_set_reconnect_timeout = _proto("mq_source_set_reconnect_timeout", c_int, c_void_p, c_double)
mq_source_set_heartbeat = _proto("mq_source_set_heartbeat", c_int, c_void_p, c_double)
mq_source_wait = _proto("mq_source_wait", c_int, c_void_p, c_double)
mq_source_set_config_handler = _proto("mq_source_set_config_handler", c_int, c_void_p, c_void_p, c_void_p)
mq_source_declare = _proto("mq_source_declare", c_int, c_void_p, c_char_p, c_char_p, c_double)
mq_source_declare_many = _proto("mq_source_declare_many", c_int, c_void_p, c_char_p, c_double)
mq_source_set_chunk_size = _proto("mq_source_set_chunk_size", c_int, c_void_p, c_char_p, c_int64)
mq_source_send = _proto("mq_source_send", c_int, c_void_p, c_char_p, c_int64, c_double, c_double)
# Metric handles (mq_metric *), for sends without the look-up by name.
mq_source_metric = _proto("mq_source_metric", c_void_p, c_void_p, c_char_p)
mq_metric_send = _proto("mq_metric_send", c_int, c_void_p, c_int64, c_double, c_double)
mq_metric_send_batch = _proto("mq_metric_send_batch", c_int, c_void_p, c_void_p, c_void_p, c_size_t, c_double)


def ctypes_metric_send(metric, time_ns, value, timeout):
    """mq_metric_send through ctypes, refusing a time outside int64 (which
    ctypes would wrap silently) with OverflowError, as _fastsend does."""
    if type(time_ns) is int and not -(1 << 63) <= time_ns < (1 << 63):
        raise OverflowError("time is out of the int64 nanosecond range")
    return mq_metric_send(metric, time_ns, value, timeout)


# The per-point sends, through the C extension libmetricq._fastsend when it
# was built: a fraction of the cost of a ctypes call. It hands any argument
# it does not convert itself to the ctypes function, so the two behave the
# same.
try:
    from . import _fastsend
except ImportError:
    FAST_SEND = False
    send = mq_source_send
    metric_send = ctypes_metric_send
    Sender = None

else:
    _fastsend.init(
        ctypes.cast(mq_source_send, c_void_p).value,
        mq_source_send,
        ctypes.cast(mq_metric_send, c_void_p).value,
        mq_metric_send,
    )
    FAST_SEND = True
    send = _fastsend.send
    metric_send = _fastsend.metric_send
    # A metric's send(time, value) as one C callable (see SourceMetric).
    Sender = _fastsend.Sender
# The arrays are passed as addresses (int) so that numpy and array.array
# buffers go in without a ctypes wrapper object.
mq_source_send_batch = _proto(
    "mq_source_send_batch", c_int, c_void_p, c_char_p, c_void_p, c_void_p, c_size_t, c_double
)
mq_source_flush = _proto("mq_source_flush", c_int, c_void_p, c_double)
mq_source_config = _proto("mq_source_config", c_int, c_void_p, c_char_p, c_size_t)
mq_source_stop = _proto("mq_source_stop", c_int, c_void_p, c_double)
mq_source_free = _proto("mq_source_free", None, c_void_p)
mq_source_set_period = _proto("mq_source_set_period", c_int, c_void_p, c_double)
mq_source_run_interval = _proto("mq_source_run_interval", c_int, c_void_p, c_double, c_void_p, c_void_p)
mq_source_stats = _proto("mq_source_stats", c_int, c_void_p, POINTER(mq_stats), c_size_t)
mq_set_log_handler = _proto("mq_set_log_handler", None, c_void_p, c_void_p)
mq_set_log_level = _proto("mq_set_log_level", c_int, c_int)


def fn_address(callback):
    """The address of a ctypes callback (CONFIG_FN, UPDATE_FN, LOG_FN) for
    the function-pointer arguments, which are declared as c_void_p so that
    None passes NULL. The caller keeps the callback object alive."""
    return ctypes.cast(callback, c_void_p)


def last_error():
    """This thread's mq_last_error() as str."""
    return mq_last_error().decode("utf-8", "replace")

