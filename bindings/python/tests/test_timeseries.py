"""Timestamp and Timedelta, compared with the reference metricq ones where
they should agree, and with the Go core (libmetricq/time.go) where they
deliberately differ."""

import datetime
import pickle
import time

import metricq
import pytest

import libmetricq
from libmetricq import Timedelta, Timestamp

UNITS = {
    "ns": 1, "nanosecond": 1, "nanoseconds": 1,
    "us": 10**3, "microsecond": 10**3, "microseconds": 10**3, "μs": 10**3,
    "ms": 10**6, "millisecond": 10**6, "milliseconds": 10**6,
    "": 10**9, "s": 10**9, "second": 10**9, "seconds": 10**9,
    "min": 60 * 10**9, "minute": 60 * 10**9, "minutes": 60 * 10**9,
    "h": 3600 * 10**9, "hour": 3600 * 10**9, "hours": 3600 * 10**9,
    "d": 86400 * 10**9, "day": 86400 * 10**9, "days": 86400 * 10**9,
}  # fmt: skip


@pytest.mark.parametrize("unit", list(UNITS))
def test_from_string_units_agree_with_reference(unit):
    for number in ("0", "1", "7", "42", "1000", "+3", "-3", "2.5", "2,5", "1.25", "-4"):
        for sep in ("", " "):
            text = f"{number}{sep}{unit}"
            ours = Timedelta.from_string(text)
            ref = metricq.Timedelta.from_string(text)
            assert ours.ns == ref.ns, text
    assert Timedelta.from_string(f"3{unit}").ns == 3 * UNITS[unit]


def test_from_string_go_semantics():
    # exact integer arithmetic (the reference goes through float)
    assert Timedelta.from_string("0.1s").ns == 100_000_000
    assert Timedelta.from_string("1.000000001s").ns == 1_000_000_001
    assert Timedelta.from_string("0.3333333333333333333s").ns == 333_333_333  # truncated
    assert Timedelta.from_string("1.5ns").ns == 1
    # a leading fraction, and the sign applies to it
    assert Timedelta.from_string(".5s").ns == 500_000_000
    assert Timedelta.from_string("-1.5s").ns == -1_500_000_000
    assert Timedelta.from_string("-0.5ms").ns == -500_000
    assert Timedelta.from_string("  12  min  ").ns == 12 * 60 * 10**9
    assert Timedelta.from_string("1.µs").ns == 1000  # micro sign U+00B5 too
    assert Timedelta.from_string("106751d").ns == 106751 * 86400 * 10**9
    for bad in ("", " ", "s", "1 parsec", "1e3s", "--1s", "1.2.3s", "abc", ".", "1 s s", "106752d", "9223372036854775808ns"):
        with pytest.raises(ValueError):
            Timedelta.from_string(bad)
    with pytest.raises(TypeError):
        Timedelta.from_string(5)


@pytest.mark.parametrize(
    "ns",
    [0, 1, 999, 1000, 1500, 10**6, 10**9, 1_500_000_000, 60 * 10**9, 90 * 60 * 10**9, 3600 * 10**9,
     86400 * 10**9, 7 * 86400 * 10**9, 123456789, -1, -1000, -3 * 10**9, -86400 * 10**9, -1_500_000],
)  # fmt: skip
def test_precise_string(ns):
    ours = Timedelta(ns).precise_string
    assert Timedelta.from_string(ours).ns == ns
    if ns != 0:  # the reference writes 0 as "0ns", Go as "0s"
        assert ours == metricq.Timedelta(ns).precise_string
    assert Timedelta(0).precise_string == "0s"


def test_timedelta_constructors_and_views():
    for f in ("from_s", "from_ms", "from_us"):
        for x in (0, 1, 2.5, -3.25, 1e-3, 123456.789):
            assert getattr(Timedelta, f)(x).ns == getattr(metricq.Timedelta, f)(x).ns
    assert Timedelta.from_ns(1.9).ns == 1
    d = Timedelta(1_234_567_890)
    ref = metricq.Timedelta(1_234_567_890)
    assert (d.ns, d.us, d.ms, d.s) == (ref.ns, ref.us, ref.ms, ref.s)
    assert d.timedelta == ref.timedelta
    assert str(d) == str(ref) and repr(d) == "Timedelta(1234567890)"
    td = datetime.timedelta(days=1, seconds=2, microseconds=3)
    assert Timedelta.from_timedelta(td).ns == metricq.Timedelta.from_timedelta(td).ns
    with pytest.raises(TypeError):
        Timedelta(1.5)


def test_timedelta_arithmetic():
    a, b = Timedelta.from_s(10), Timedelta.from_s(3)
    assert a + b == Timedelta.from_s(13)
    assert a - b == Timedelta.from_s(7)
    assert a + datetime.timedelta(seconds=1) == Timedelta.from_s(11)
    assert a - datetime.timedelta(seconds=1) == Timedelta.from_s(9)
    assert (a // 3).ns == 3_333_333_333
    assert a // b == 3
    assert a / b == pytest.approx(10 / 3)
    assert (a / 2.5).precise_string == "4s"
    assert (a * 1.5).ns == 15 * 10**9 and (2 * a).ns == 20 * 10**9
    assert a % b == Timedelta.from_s(1)
    assert -a == Timedelta.from_s(-10) and abs(-a) == a
    assert b < a and a > b and a >= a and b <= a and a != b
    assert a == datetime.timedelta(seconds=10) and b < datetime.timedelta(seconds=4)
    assert len({Timedelta(5), Timedelta(5)}) == 1
    assert not Timedelta(0) and Timedelta(1)
    assert pickle.loads(pickle.dumps(a)) == a


def test_timestamp_constructors():
    assert Timestamp.from_posix_seconds(1.5).posix_ns == metricq.Timestamp.from_posix_seconds(1.5).posix_ns
    aware = datetime.datetime(2024, 2, 29, 23, 59, 58, 999999, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert Timestamp.from_datetime(aware).posix_ns == metricq.Timestamp.from_datetime(aware).posix_ns
    with pytest.raises(TypeError):
        Timestamp.from_datetime(datetime.datetime(2024, 1, 1))  # naive
    naive = datetime.datetime(2024, 1, 1, 12, 0)
    assert Timestamp.from_local_datetime(naive).posix_ns == metricq.Timestamp.from_local_datetime(naive).posix_ns
    with pytest.raises(TypeError):
        Timestamp.from_local_datetime(aware)
    before = time.time_ns()
    now = Timestamp.now()
    assert before <= now.posix_ns <= time.time_ns()
    assert abs(libmetricq.now() - time.time_ns()) < 10**9
    assert (Timestamp.from_now(Timedelta.from_s(10)) - now).s == pytest.approx(10, abs=1)
    assert (now - Timestamp.ago(Timedelta.from_s(10))).s == pytest.approx(10, abs=1)
    with pytest.raises(TypeError):
        Timestamp(1.5)


@pytest.mark.parametrize(
    "text",
    ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.0Z", "2024-05-01T12:34:56.123456+02:00",
     "2024-05-01T12:34:56.5-03:30", "2024-05-01 12:34:56+00:00", "1999-12-31T23:59:59.999999Z", "2024-05-01T12:34:56+0100"],
)  # fmt: skip
def test_from_iso8601_agrees_with_reference(text):
    assert Timestamp.from_iso8601(text).posix_ns == metricq.Timestamp.from_iso8601(text).posix_ns


def test_from_iso8601_go_semantics():
    # all nine fractional digits (the reference keeps six)
    assert Timestamp.from_iso8601("1970-01-01T00:00:01.123456789Z").posix_ns == 1_123_456_789
    assert Timestamp.from_iso8601("1970-01-01T00:00:01.1234567891Z").posix_ns == 1_123_456_789
    assert Timestamp.from_iso8601("1970-01-01T01:00:00.000000001+01:00").posix_ns == 1
    assert Timestamp.from_iso8601("1969-12-31T23:59:59.5Z").posix_ns == -500_000_000
    with pytest.raises(TypeError):
        Timestamp.from_iso8601("2024-05-01T12:34:56")  # no zone
    for bad in ("yesterday", "2024-13-01T00:00:00Z", "2024-05-01", "2024-05-01T25:00:00Z", "2024-05-01T00:00:00+24:00"):
        with pytest.raises(ValueError):
            Timestamp.from_iso8601(bad)
    t = Timestamp(1_500_000_000)
    assert t.iso8601 == "1970-01-01T00:00:01.500000000Z"
    assert Timestamp.from_iso8601(t.iso8601) == t


def test_timestamp_views_and_arithmetic():
    ns = 1_714_567_890_123_456_789
    t, ref = Timestamp(ns), metricq.Timestamp(ns)
    assert (t.posix_ns, t.posix_us, t.posix_ms, t.posix) == (ref.posix_ns, ref.posix_us, ref.posix_ms, ref.posix)
    assert t.datetime == ref.datetime and t.datetime.tzinfo is not None
    assert str(t) == str(ref) and repr(t) == f"Timestamp({ns})"
    d = Timedelta.from_s(2)
    assert (t + d).posix_ns == ns + 2 * 10**9 and (d + t).posix_ns == ns + 2 * 10**9
    assert (t - d).posix_ns == ns - 2 * 10**9
    assert t + datetime.timedelta(seconds=1) == Timestamp(ns + 10**9)
    assert (t + d) - t == d
    assert t % Timedelta.from_s(1) == Timedelta(123_456_789)
    assert t < t + d and t + d > t and t == Timestamp(ns) and t != Timestamp(ns + 1)
    assert len({Timestamp(1), Timestamp(1)}) == 1
    assert pickle.loads(pickle.dumps(t)) == t
    with pytest.raises(TypeError):
        t + 5
