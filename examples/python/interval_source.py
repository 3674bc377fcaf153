#!/usr/bin/env python3
"""A MetricQ source that sends, at a fixed period, a 0.1 Hz sine and this
machine's 1-minute load average and available memory.

The period comes from the manager's configuration for the token: "period"
(seconds, or a duration string such as "500ms") or "rate" (Hz); 1 s if
neither is set. Needs the libmetricq package (pip install bindings/python).

    python examples/python/interval_source.py --url amqp://guest:guest@localhost/ --duration 10
"""

import argparse
import math
import os
import signal
import threading
import time

import libmetricq
from libmetricq import Timedelta, Timestamp


def load_average():
    return os.getloadavg()[0]


def mem_available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024  # kB
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def period_from(config):
    if "period" in config:
        p = config["period"]
        return Timedelta.from_string(p) if isinstance(p, str) else Timedelta.from_s(float(p))
    if "rate" in config:
        return Timedelta.from_s(1 / float(config["rate"]))
    return Timedelta.from_s(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("METRICQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--token", default="source-py-sysinfo")
    parser.add_argument("--prefix", default="example.py.sysinfo", help="metric name prefix")
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    args = parser.parse_args()

    sine, load, memory = args.prefix + ".sine", args.prefix + ".load1", args.prefix + ".mem_available"
    period = Timedelta.from_s(1)

    def on_config(source, config):
        nonlocal period
        period = period_from(config)
        common = {"rate": 1e9 / period.ns, "interval": period.precise_string}
        source.declare_metrics(
            {
                sine: {**common, "unit": "", "description": "a 0.1 Hz sine wave", "scope": "point"},
                load: {**common, "unit": "", "description": "1-minute load average", "scope": "last"},
                memory: {**common, "unit": "B", "description": "available memory", "scope": "point"},
            }
        )
        print(f"configured: period {period.precise_string}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    sent = {sine: 0, load: 0, memory: 0}
    with libmetricq.SynchronousSource(args.token, args.url, config_handler=on_config) as source:
        end = time.monotonic() + args.duration if args.duration > 0 else math.inf
        deadline = Timestamp.now()
        while not stop.is_set() and time.monotonic() < end:
            now = Timestamp.now()
            source.send(sine, now, math.sin(2 * math.pi * 0.1 * now.posix))
            source.send(load, now, load_average())
            source.send(memory, now, mem_available_bytes())
            for metric in sent:
                sent[metric] += 1
            # the next deadline on a fixed grid; missed ones are skipped
            deadline += period
            while deadline <= Timestamp.now():
                deadline += period
            stop.wait(min((deadline - Timestamp.now()).s, max(end - time.monotonic(), 0)))
    print(f"sent {sum(sent.values())} points", flush=True)
    write_demo_report(sent)


def write_demo_report(sent):
    """For `make demo`: the points sent per metric, compared with what arrived."""
    report = os.environ.get("METRICQ_DEMO_REPORT")
    if report:
        with open(report, "w") as f:
            f.writelines(f"{metric} {count}\n" for metric, count in sent.items())


if __name__ == "__main__":
    main()
