"""Source and IntervalSource to subclass, as ``metricq.Source`` and
``metricq.IntervalSource``, but synchronous: handlers, ``task()`` and
``update()`` are plain methods, and :meth:`Source.run` blocks.

    class Counter(IntervalSource):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, period=Timedelta.from_s(1), **kwargs)
            self.counter = 0

        @rpc_handler("config")
        def _mq_on_config(self, **_config):
            self.declare_metrics(["example.counter"])

        def update(self):
            self.send("example.counter", time=Timestamp.now(), value=self.counter)
            self.counter += 1

    Counter("source-counter", "amqp://localhost/").run()
"""

import inspect
import logging
import threading

from . import _lib
from .exceptions import MetricQError, PublishFailed
from .source import SynchronousSource, _chunk_size_arg, _reference_identity
from .timeseries import Timedelta

__all__ = ["rpc_handler", "Source", "IntervalSource"]

logger = logging.getLogger("libmetricq")

# How often run() looks up from waiting, so that Ctrl-C (KeyboardInterrupt,
# raised only between Python bytecodes of the main thread) is seen at once.
_POLL = 0.2

_TAGS = "__libmetricq_rpc_tags"

_SYNCHRONOUS_SIGNATURE = inspect.signature(SynchronousSource)


def rpc_handler(*function_tags):
    """Marks a method of a :class:`Source` subclass as the handler of the
    named RPCs, as ``metricq.rpc_handler``. The one RPC a Source receives
    is ``"config"``: the handler is called with the manager's configuration
    as keyword arguments, while connecting and on every later "config"
    RPC."""
    for tag in function_tags:
        if not isinstance(tag, str):
            raise TypeError(f"rpc_handler takes RPC names (str), got {type(tag).__name__}")

    def decorator(handler):
        setattr(handler, _TAGS, function_tags)
        return handler

    return decorator


class Source:
    """A MetricQ Source to subclass, like ``metricq.Source``.

    Arguments are SynchronousSource's, without config_handler and
    raise_errors: the reference's ``token``, ``url``, ``client_version``
    (default here: the ``__version__`` of the module that defines the
    subclass, if any), ``add_uuid``, ``connection_timeout`` and
    ``management_url``; beyond them ``timeout``, ``chunk_size``,
    ``max_buffered`` and ``heartbeat``.

    Methods marked ``@rpc_handler("config")`` receive the configuration.
    Override :meth:`task` for a main loop: it runs in a thread of its own
    once the source has connected and received its configuration, and
    should return when :attr:`task_stop_event` is set. :meth:`run` connects
    and blocks until :meth:`stop` (from any thread, the task or a handler)
    or Ctrl-C, then stops cleanly. As in the reference, failures of
    :meth:`send`, :meth:`declare_metrics` and :meth:`flush` raise.
    """

    def __init__(self, *args, **kwargs):
        for own in ("config_handler", "raise_errors"):
            if own in kwargs:
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {own!r}: "
                    "a Source takes its configuration with @rpc_handler(\"config\") and raises its errors"
                )
        # SynchronousSource's signature: an argument it does not take, or a
        # missing token, fails here, naming it.
        arguments = _SYNCHRONOUS_SIGNATURE.bind(*args, **kwargs).arguments
        # The token is final now, as in the reference (add_uuid included).
        arguments["token"], arguments["url"] = _reference_identity(
            arguments["token"], arguments.get("url"), arguments.pop("management_url", None), arguments.pop("add_uuid", False)
        )
        _chunk_size_arg(arguments.get("chunk_size", _lib.DEFAULT_CHUNK_SIZE))  # refused now, not at run()
        if arguments.get("client_version") is None:
            arguments["client_version"] = _module_version(type(self))
        self._mq_arguments = arguments
        self._mq_source = None
        self._mq_stop_lock = threading.Lock()
        self._mq_stop_requested = False
        self._mq_failure = None
        self._mq_in_handler = threading.local()
        self._mq_task_thread = None
        #: Set when the source stops: :meth:`task` should return then
        #: (the reference's task_stop_future).
        self.task_stop_event = threading.Event()

    # --- what subclasses override -------------------------------------------

    def task(self):
        """The main loop, started in a thread of its own after the source
        connected and received its configuration. It should return once
        :attr:`task_stop_event` is set. An exception stops the source and
        is raised from :meth:`run`. The default does nothing."""

    # --- the reference's methods ---------------------------------------------

    @property
    def token(self):
        return self._mq_arguments["token"]

    def declare_metrics(self, metrics, timeout=60.0):
        """Declares metrics: ``{name: metadata}`` or a list of names."""
        self._mq_connected().declare_metrics(metrics, timeout=timeout)

    def send(self, metric, time, value, timeout=60.0):
        """Sends a data point; raises on failure (nothing was accepted)."""
        self._mq_connected().send(metric, time, value, timeout=timeout)

    def send_batch(self, metric, times, values, timeout=60.0):
        """Sends points of one metric at once, all or none."""
        self._mq_connected().send_batch(metric, times, values, timeout=timeout)

    def flush(self, timeout=60.0):
        """Hands every point sent so far to the broker."""
        self._mq_connected().flush(timeout=timeout)

    @property
    def chunk_size(self):
        """Points per chunk, as ``metricq.Source.chunk_size``."""
        if self._mq_source is not None:
            return self._mq_source.chunk_size
        return self._mq_arguments.get("chunk_size", _lib.DEFAULT_CHUNK_SIZE)

    @chunk_size.setter
    def chunk_size(self, chunk_size):
        if self._mq_source is not None:
            self._mq_source.chunk_size = chunk_size
        else:
            _chunk_size_arg(chunk_size)
            self._mq_arguments["chunk_size"] = chunk_size

    def __getitem__(self, metric):
        """``source["metric"].chunk_size``, once connected (in a handler,
        the task or update)."""
        return self._mq_connected()[metric]

    @property
    def config(self):
        """The latest configuration from the manager, a dict."""
        return self._mq_connected().config

    @property
    def stats(self):
        """The library's counters, a dict (every mq_stats field)."""
        return self._mq_connected().stats

    def connect(self):
        """Connects and registers; the config handlers run before it
        returns. :meth:`run` calls it; call it yourself only to send before
        running."""
        if self._mq_source is not None:
            return
        source = SynchronousSource(
            **self._mq_arguments,
            config_handler=self._mq_on_config,
            raise_errors=True,
        )
        self._mq_source = source

    def stop(self, exception=None, timeout=60.0):
        """Stops the source (flushing within timeout) and makes :meth:`run`
        return, or raise ``exception`` when one is given. From any thread,
        the task, update or a config handler."""
        with self._mq_stop_lock:
            if exception is not None and self._mq_failure is None:
                self._mq_failure = exception
            self._mq_stop_requested = True
        self.task_stop_event.set()
        source = self._mq_source
        if source is None:
            return
        if getattr(self._mq_in_handler, "active", False):
            # The library refuses a stop from inside the configuration
            # hook, which the stop would wait for.
            source.stop(timeout=timeout, block=False)
            return
        source.stop(timeout=timeout)

    def run(self):
        """Connects, starts the task and blocks until the source stops:
        by :meth:`stop` (returns None, or raises the exception given to
        it), by Ctrl-C (stops cleanly and returns None), by a failed task
        or update (raises its exception) or on its own (raises the cause,
        e.g. :class:`~libmetricq.ConnectFailed` once a lost connection
        stayed down for connection_timeout)."""
        cause = None
        try:
            self.connect()
            with self._mq_stop_lock:
                stopped = self._mq_stop_requested
            if stopped:
                self._mq_source.stop()
            else:
                self._mq_start()
            while True:
                try:
                    self._mq_source.wait(_POLL)
                    break
                except TimeoutError:
                    continue
                except MetricQError as e:
                    cause = e
                    break
        except KeyboardInterrupt:
            logger.info("source %s: interrupted, stopping", self.token)
            self.stop()
        finally:
            self.task_stop_event.set()
            self._mq_join()
            if self._mq_source is not None:
                # Also when starting failed: never leave the source running.
                try:
                    self._mq_source.stop()
                except MetricQError as e:
                    logger.debug("source %s: final stop: %s", self.token, e)
        if self._mq_failure is not None:
            raise self._mq_failure
        if cause is not None:
            raise cause

    # --- internals ------------------------------------------------------------

    def _mq_connected(self):
        if self._mq_source is None:
            raise RuntimeError("the source is not connected yet: call run() (or connect()) first")
        return self._mq_source

    def _mq_on_config(self, source, config):
        # Handlers may use the source before its constructor returned.
        self._mq_source = source
        self._mq_in_handler.active = True
        try:
            for handler in _handlers(type(self), "config"):
                handler(self, **config)
        finally:
            self._mq_in_handler.active = False

    def _mq_start(self):
        if type(self).task is Source.task:
            return
        self._mq_task_thread = threading.Thread(target=self._mq_run_task, name="libmetricq-task", daemon=True)
        self._mq_task_thread.start()

    def _mq_run_task(self):
        try:
            self.task()
        except BaseException as e:
            logger.error("source %s: task failed, stopping: %s", self.token, e)
            self.stop(e)

    def _mq_join(self):
        if self._mq_task_thread is not None:
            self._mq_task_thread.join()

    def close(self):
        """Releases the source (stopping it if needed)."""
        if self._mq_source is not None:
            self._mq_source.close()


class IntervalSource(Source):
    """A Source calling :meth:`update` every :attr:`period`, like
    ``metricq.IntervalSource``: first once connected, then on a fixed grid
    of deadlines; when an update overruns, the missed deadlines are skipped
    (never run in a burst). ``period`` (keyword): seconds or a
    :class:`Timedelta`, settable later, e.g. from a config handler.

    An exception from :meth:`update` stops the source and is raised from
    :meth:`run`, except :class:`~libmetricq.PublishFailed`, which is logged
    and ridden out, as in the reference.
    """

    def __init__(self, *args, period=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._period = None
        self._mq_rc = None
        if period is not None:
            self.period = period

    @property
    def period(self):
        """The time between updates, a :class:`Timedelta` (None until set)."""
        return self._period

    @period.setter
    def period(self, duration):
        if duration is None:
            raise TypeError("Setting the IntervalSource update period to None is not supported")
        if not isinstance(duration, Timedelta):
            if isinstance(duration, bool) or not isinstance(duration, (int, float)):
                raise TypeError(f"period must be seconds or a Timedelta, got {type(duration).__name__}")
            duration = Timedelta.from_s(duration)
        if duration.ns <= 0:
            raise ValueError(f"period must be positive, got {duration}")
        self._period = duration
        source = self._mq_source
        if source is not None:
            source._check(_lib.mq_source_set_period(source._h, duration.s), "period")

    def update(self):
        """Called every :attr:`period`; override it."""
        raise NotImplementedError("IntervalSource subclasses implement update()")

    def _mq_start(self):
        if self._period is None:
            raise ValueError("IntervalSource.period not set before running task")
        callback = _lib.UPDATE_FN(self._mq_on_update)
        self._mq_task_thread = threading.Thread(
            target=self._mq_run_interval, args=(callback,), name="libmetricq-interval", daemon=True
        )
        self._mq_task_thread.start()

    def _mq_run_interval(self, callback):
        source = self._mq_source
        self._mq_rc = _lib.mq_source_run_interval(source._h, self._period.s, _lib.fn_address(callback), None)
        if self._mq_rc not in (_lib.OK, _lib.ERR_STOPPED):
            logger.debug("source %s: interval schedule ended: %s", self.token, _lib.last_error())

    def _mq_on_update(self, _src, _user):
        # On a library thread; nothing may escape into the library.
        try:
            self.update()
            return 0
        except PublishFailed as e:
            logger.debug("source %s: failed to send: %s", self.token, e)
            return _lib.ERR_PUBLISH
        except BaseException as e:
            with self._mq_stop_lock:
                if self._mq_failure is None:
                    self._mq_failure = e
            logger.error("source %s: update failed, stopping: %s", self.token, e)
            return -1


def _handlers(cls, tag):
    """The methods of cls (and its bases) marked with rpc_handler(tag), each
    once, bases first."""
    seen = set()
    out = []
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            if tag in getattr(member, _TAGS, ()) and name not in seen:
                seen.add(name)
                out.append(getattr(cls, name))
    return out


def _module_version(cls):
    """The __version__ of the module defining cls, as the reference looks
    for a client version; None when there is none."""
    module = inspect.getmodule(cls)
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None
