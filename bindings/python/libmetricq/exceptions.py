"""Exceptions raised for the status codes of libmetricq.

Every error of the library is a :class:`MetricQError` with the C status code
in ``.status`` and the library's explanation (``mq_last_error()``) as its
message. The subclasses also derive from the matching builtin where there is
one, so ``except ValueError`` catches a bad metric name and
``except TimeoutError`` a timeout.
"""

from . import _lib


class MetricQError(Exception):
    """Base class of the errors of libmetricq.

    Attributes:
        status: the C status code (``MQ_ERR_*``, negative).
    """

    status = _lib.ERR_INTERNAL

    def __init__(self, message=None, status=None):
        if status is not None:
            self.status = status
        if not message:
            message = _lib.mq_strerror(self.status).decode("utf-8", "replace")
        super().__init__(message)


class InvalidArgument(MetricQError, ValueError):
    """A bad argument: metric name, metadata, chunk size, timeout, a freed source (MQ_ERR_INVALID)."""

    status = _lib.ERR_INVALID


class Timeout(MetricQError, TimeoutError):
    """The call did not complete in the time given (MQ_ERR_TIMEOUT).

    A subclass of the builtin :class:`TimeoutError`, which is what to catch.
    """

    status = _lib.ERR_TIMEOUT


class ConnectFailed(MetricQError, ConnectionError):
    """Broker unreachable, login refused, TLS failure, or the connection was lost for good (MQ_ERR_CONNECT)."""

    status = _lib.ERR_CONNECT


class RPCError(MetricQError):
    """The manager answered with an error or an unreadable reply (MQ_ERR_RPC)."""

    status = _lib.ERR_RPC


class UndeclaredMetric(MetricQError):
    """A send for a metric this source never declared (MQ_ERR_UNDECLARED)."""

    status = _lib.ERR_UNDECLARED


class OrderError(MetricQError, ValueError):
    """A timestamp not strictly greater than the metric's last one (MQ_ERR_ORDER)."""

    status = _lib.ERR_ORDER


class PublishFailed(MetricQError):
    """Publishing failed; the points accepted so far stay buffered (MQ_ERR_PUBLISH)."""

    status = _lib.ERR_PUBLISH


class SourceStopped(MetricQError):
    """The source was stopped (or closed) (MQ_ERR_STOPPED)."""

    status = _lib.ERR_STOPPED


class InternalError(MetricQError):
    """An internal failure of the library that was contained: a bug (MQ_ERR_INTERNAL)."""

    status = _lib.ERR_INTERNAL


_BY_STATUS = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        Timeout,
        ConnectFailed,
        RPCError,
        UndeclaredMetric,
        OrderError,
        PublishFailed,
        SourceStopped,
        InternalError,
    )
}


def error_for(status, message=None):
    """The exception for a status code; the message defaults to this thread's mq_last_error()."""
    if message is None:
        message = _lib.last_error()
    cls = _BY_STATUS.get(status)
    if cls is None:
        return MetricQError(f"unknown status {status}: {message}", status=status)
    return cls(message)
