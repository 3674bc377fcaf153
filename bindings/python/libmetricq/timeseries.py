"""Timestamp and Timedelta: integer nanoseconds, as in the MetricQ protocol.

Modeled on ``metricq.Timestamp`` and ``metricq.Timedelta`` (same constructors,
properties and operators), with two deliberate differences that follow the
library's Go core (libmetricq/time.go):

* :meth:`Timedelta.from_string` computes in integers (``"0.1s"`` is exactly
  100000000 ns), accepts ``".5s"``, applies the sign to the fraction too
  (``"-1.5s"`` is -1.5 s; the reference gives -0.5 s) and refuses values
  beyond about ±292 years;
* :meth:`Timestamp.from_iso8601` keeps all nine fractional digits (the
  reference drops everything after the sixth) and needs a zone offset.
"""

import datetime as _dt
import operator
import re
import time as _time
from functools import total_ordering

__all__ = ["Timestamp", "Timedelta"]

_INT64_MAX = (1 << 63) - 1

_NS = 1
_US = 1_000
_MS = 1_000_000
_S = 1_000_000_000
_MIN = 60 * _S
_H = 60 * _MIN
_D = 24 * _H

_UNITS = {
    "": _S, "s": _S, "second": _S, "seconds": _S,
    "ms": _MS, "millisecond": _MS, "milliseconds": _MS,
    "us": _US, "microsecond": _US, "microseconds": _US,
    "\u03bcs": _US, "\u00b5s": _US,  # μs (Greek mu, as the reference writes it) and µs (micro sign)
    "ns": _NS, "nanosecond": _NS, "nanoseconds": _NS,
    "min": _MIN, "minute": _MIN, "minutes": _MIN,
    "h": _H, "hour": _H, "hours": _H,
    "d": _D, "day": _D, "days": _D,
}  # fmt: skip

# Largest first: precise_string picks the largest unit dividing the value.
_PRECISE_UNITS = (("d", _D), ("h", _H), ("min", _MIN), ("s", _S), ("ms", _MS), ("\u03bcs", _US), ("ns", _NS))

_DURATION = re.compile(r"([+-]?)([0-9]*)(?:[.,]([0-9]*))?(.*)", re.S)


def _ascii_digits(s):
    return s.isascii() and s.isdigit()


@total_ordering
class Timedelta:
    """A (possibly negative) duration in integer nanoseconds.

    Supports ``+``, ``-`` (with Timedelta and :class:`datetime.timedelta`),
    ``d + t`` with a :class:`Timestamp`, ``d * x`` and ``d / x`` (truncated
    to whole nanoseconds), ``d // n``, ``d1 // d2`` (int), ``d1 / d2``
    (float), ``%``, negation, comparisons and hashing.
    """

    __slots__ = ("_value",)

    def __init__(self, nanoseconds):
        self._value = operator.index(nanoseconds)

    # --- constructors ---------------------------------------------------

    @staticmethod
    def from_timedelta(delta):
        """From a :class:`datetime.timedelta` (microsecond resolution)."""
        seconds = delta.days * 86400 + delta.seconds
        return Timedelta((seconds * 1_000_000 + delta.microseconds) * 1000)

    @staticmethod
    def from_string(duration_str):
        """Parses ``"<number><unit>"``, e.g. ``"10s"``, ``"1.5 ms"``, ``"2 days"``, ``"-3min"``.

        Spaces are allowed around the number and the unit; ``.`` or ``,``
        separates the fraction; no unit means seconds. Units: ``ns``, ``us``
        (also ``μs``/``µs``), ``ms``, ``s``, ``min``, ``h``, ``d`` and their
        long names (``nanosecond(s)`` ... ``day(s)``). The value is computed
        exactly and truncated toward zero to whole nanoseconds.

        Raises:
            ValueError: not of this form, an unknown unit, or out of the
                int64 nanosecond range.
        """
        if not isinstance(duration_str, str):
            raise TypeError(f"Timedelta.from_string needs a str, got {type(duration_str).__name__}")

        def bad(why):
            return ValueError(f"invalid duration string {duration_str!r}: {why}")

        sign, whole, frac, unit_name = _DURATION.fullmatch(duration_str.strip()).groups()
        if frac is None:
            frac = ""
        if not whole and not frac:
            raise bad("no number")
        if not (_ascii_digits(whole) or not whole) or not (_ascii_digits(frac) or not frac):
            raise bad("not a decimal number")
        unit_name = unit_name.strip()
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise bad(f"unknown unit {unit_name!r} (use ns, us, μs, ms, s, min, h, d or their long names)")
        total = int(whole or "0") * unit
        # A unit is at most 8.64e13 ns: 14 fractional digits reach below 1 ns.
        frac = frac[:14]
        if frac:
            total += int(frac) * unit // 10 ** len(frac)
        if total > _INT64_MAX:
            raise bad("out of range")
        return Timedelta(-total if sign == "-" else total)

    @staticmethod
    def from_ns(nanoseconds):
        """From a number of nanoseconds (truncated toward zero)."""
        return Timedelta(int(nanoseconds))

    @staticmethod
    def from_us(microseconds):
        """From a number of microseconds (truncated toward zero to whole ns)."""
        return Timedelta(int(microseconds * 1e3))

    @staticmethod
    def from_ms(milliseconds):
        """From a number of milliseconds (truncated toward zero to whole ns)."""
        return Timedelta(int(milliseconds * 1e6))

    @staticmethod
    def from_s(seconds):
        """From a number of seconds (truncated toward zero to whole ns)."""
        return Timedelta(int(seconds * 1e9))

    # --- views ------------------------------------------------------------

    @property
    def precise_string(self):
        """The value in the largest unit that divides it exactly, e.g. ``"3s"``,
        ``"100ms"``, ``"90min"``, ``"1500μs"``; parses back to the same value."""
        v = self._value
        if v == 0:
            return "0s"
        for name, size in _PRECISE_UNITS:
            if v % size == 0:
                return f"{v // size}{name}"
        raise AssertionError("unreachable")

    @property
    def ns(self):
        """Nanoseconds (int)."""
        return self._value

    @property
    def us(self):
        """Microseconds (float)."""
        return self._value / 1e3

    @property
    def ms(self):
        """Milliseconds (float)."""
        return self._value / 1e6

    @property
    def s(self):
        """Seconds (float)."""
        return self._value / 1e9

    @property
    def timedelta(self):
        """As a :class:`datetime.timedelta` (floored to microseconds)."""
        return _dt.timedelta(microseconds=self._value // 1000)

    # --- operators ----------------------------------------------------------

    def __add__(self, other):
        if isinstance(other, Timedelta):
            return Timedelta(self._value + other._value)
        if isinstance(other, _dt.timedelta):
            return Timedelta(self._value + Timedelta.from_timedelta(other)._value)
        if isinstance(other, Timestamp):
            return Timestamp(other._value + self._value)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Timedelta):
            return Timedelta(self._value - other._value)
        if isinstance(other, _dt.timedelta):
            return Timedelta(self._value - Timedelta.from_timedelta(other)._value)
        return NotImplemented

    def __neg__(self):
        return Timedelta(-self._value)

    def __pos__(self):
        return self

    def __abs__(self):
        return Timedelta(abs(self._value))

    def __mul__(self, factor):
        if isinstance(factor, Timedelta):
            return NotImplemented
        return Timedelta(int(self._value * factor))

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, Timedelta):
            return self._value // other._value
        return Timedelta(self._value // other)

    def __truediv__(self, other):
        if isinstance(other, Timedelta):
            return self._value / other._value
        return Timedelta(int(self._value / other))

    def __mod__(self, other):
        if isinstance(other, Timedelta):
            return Timedelta(self._value % other._value)
        return NotImplemented

    def __bool__(self):
        return self._value != 0

    def __eq__(self, other):
        if isinstance(other, Timedelta):
            return self._value == other._value
        if isinstance(other, _dt.timedelta):
            return self.timedelta == other
        return NotImplemented

    def __lt__(self, other):
        if isinstance(other, Timedelta):
            return self._value < other._value
        if isinstance(other, _dt.timedelta):
            return self.timedelta < other
        return NotImplemented

    def __hash__(self):
        return hash(self._value)

    def __str__(self):
        """Seconds as in the reference, e.g. ``"86400.0s"``; see :attr:`precise_string`."""
        return f"{self.s}s"

    def __repr__(self):
        return f"Timedelta({self._value})"

    def __reduce__(self):
        return (Timedelta, (self._value,))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

_ISO8601 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)


@total_ordering
class Timestamp:
    """A point in time: integer nanoseconds since the Unix epoch, UTC.

    Supports ``t + d`` and ``t - d`` with a :class:`Timedelta`, ``t1 - t2``
    (a Timedelta), ``t % d``, comparisons and hashing.
    """

    __slots__ = ("_value",)

    _EPOCH = _EPOCH

    def __init__(self, nanoseconds):
        self._value = operator.index(nanoseconds)

    # --- constructors ---------------------------------------------------

    @classmethod
    def now(cls):
        """The current time (the system's real-time clock, full ns resolution)."""
        return cls(_time.time_ns())

    @classmethod
    def from_posix_seconds(cls, seconds):
        """From float seconds since the epoch (truncated toward zero to whole ns)."""
        return cls(int(seconds * 1e9))

    @classmethod
    def from_datetime(cls, dt):
        """From an aware :class:`datetime.datetime` (microsecond resolution).

        Raises:
            TypeError: for a naive datetime (see :meth:`from_local_datetime`).
        """
        if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
            raise TypeError(
                "cannot convert a naive datetime (no tzinfo) with `from_datetime`; "
                "attach a time zone, or use `from_local_datetime` if it is local time"
            )
        delta = dt - _EPOCH
        seconds = delta.days * 86400 + delta.seconds
        return cls((seconds * 1_000_000 + delta.microseconds) * 1000)

    @classmethod
    def from_local_datetime(cls, dt):
        """From a naive datetime in the host's local time zone.

        Raises:
            TypeError: for an aware datetime (use :meth:`from_datetime`).
        """
        if dt.tzinfo is not None:
            raise TypeError("refusing an aware datetime in `from_local_datetime`; use `from_datetime`")
        return cls.from_datetime(dt.astimezone())

    @classmethod
    def from_iso8601(cls, iso_string):
        """From an ISO-8601 / RFC 3339 date and time with a zone offset, e.g.
        ``"2024-05-01T12:00:00.123456789+02:00"`` or ``"...Z"``. All nine
        fractional digits are kept (more are truncated).

        Raises:
            ValueError: not of this form.
            TypeError: no zone offset (its meaning would depend on the host's zone).
        """
        m = _ISO8601.fullmatch(iso_string.strip())
        if not m:
            raise ValueError(f"not an ISO-8601 date and time: {iso_string!r}")
        year, month, day, hour, minute, second, frac, zone = m.groups()
        if zone is None:
            raise TypeError(f"ISO-8601 time without a zone offset: {iso_string!r}")
        if zone in ("Z", "z"):
            tz = _dt.timezone.utc
        else:
            digits = zone[1:].replace(":", "")
            offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or "0"))
            if offset >= _dt.timedelta(hours=24):
                raise ValueError(f"zone offset out of range: {iso_string!r}")
            tz = _dt.timezone(-offset if zone[0] == "-" else offset)
        try:
            dt = _dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz)
        except ValueError as e:
            raise ValueError(f"not a valid date and time: {iso_string!r}: {e}") from None
        delta = dt - _EPOCH
        ns = (delta.days * 86400 + delta.seconds) * _S
        if frac:
            ns += int(frac[:9].ljust(9, "0"))
        return cls(ns)

    @classmethod
    def ago(cls, delta):
        """``Timestamp.now() - delta``."""
        return cls.now() - delta

    @classmethod
    def from_now(cls, delta):
        """``Timestamp.now() + delta``."""
        return cls.now() + delta

    # --- views ------------------------------------------------------------

    @property
    def posix_ns(self):
        """Nanoseconds since the epoch (int)."""
        return self._value

    @property
    def posix_us(self):
        """Microseconds since the epoch (float)."""
        return self._value / 1000

    @property
    def posix_ms(self):
        """Milliseconds since the epoch (float)."""
        return self._value / 1000000

    @property
    def posix(self):
        """Seconds since the epoch (float)."""
        return self._value / 1000000000

    @property
    def datetime(self):
        """An aware UTC :class:`datetime.datetime` (floored to microseconds)."""
        return _EPOCH + _dt.timedelta(microseconds=self._value // 1000)

    @property
    def iso8601(self):
        """RFC 3339 in UTC with all nine fractional digits, e.g. ``"1970-01-01T00:00:01.500000000Z"``."""
        seconds, ns = divmod(self._value, _S)
        base = _EPOCH + _dt.timedelta(seconds=seconds)
        return f"{base:%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"

    # --- operators ----------------------------------------------------------

    def __add__(self, delta):
        if isinstance(delta, Timedelta):
            return Timestamp(self._value + delta._value)
        if isinstance(delta, _dt.timedelta):
            return Timestamp(self._value + Timedelta.from_timedelta(delta)._value)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Timedelta):
            return Timestamp(self._value - other._value)
        if isinstance(other, Timestamp):
            return Timedelta(self._value - other._value)
        if isinstance(other, _dt.timedelta):
            return Timestamp(self._value - Timedelta.from_timedelta(other)._value)
        return NotImplemented

    def __mod__(self, other):
        if isinstance(other, Timedelta):
            return Timedelta(self._value % other._value)
        return NotImplemented

    def __eq__(self, other):
        if isinstance(other, Timestamp):
            return self._value == other._value
        return NotImplemented

    def __lt__(self, other):
        if isinstance(other, Timestamp):
            return self._value < other._value
        return NotImplemented

    def __hash__(self):
        return hash(self._value)

    def __str__(self):
        """``"[<ns>] <local date and time>"``, as the reference."""
        return f"[{self._value}] {self.datetime.astimezone()}"

    def __repr__(self):
        return f"Timestamp({self._value})"

    def __reduce__(self):
        return (Timestamp, (self._value,))
