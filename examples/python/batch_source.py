#!/usr/bin/env python3
"""A MetricQ source that samples a signal at a high rate and sends it in
batches: each second, one numpy array of timestamps and one of values go to
send_batch, which hands them to the library without copying.

Needs the libmetricq package (pip install bindings/python) and numpy.

    python examples/python/batch_source.py --url amqp://guest:guest@localhost/ --rate 10000 --duration 10
"""

import argparse
import os
import signal
import threading
import time

import numpy as np

import libmetricq
from libmetricq import Timedelta, Timestamp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("METRICQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--token", default="source-py-batch")
    parser.add_argument("--metric", default="example.py.batch.signal")
    parser.add_argument("--rate", type=float, default=1000.0, help="samples per second")
    parser.add_argument("--batch", type=float, default=1.0, help="seconds of samples per send_batch")
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    args = parser.parse_args()

    interval = Timedelta.from_s(1 / args.rate)
    per_batch = max(1, round(args.batch * args.rate))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    # One chunk per batch: the library sends each batch as one message.
    with libmetricq.SynchronousSource(args.token, args.url, chunk_size=per_batch) as source:
        source.declare_metrics(
            {args.metric: {"unit": "V", "rate": args.rate, "interval": interval.precise_string, "description": "a noisy 5 Hz sine"}}
        )
        rng = np.random.default_rng()
        offsets = np.arange(per_batch, dtype=np.int64) * interval.ns
        next_start = Timestamp.now().posix_ns
        started = time.monotonic()
        sent = 0
        while not stop.is_set() and (args.duration <= 0 or time.monotonic() - started < args.duration):
            times = next_start + offsets  # int64 ns, C-contiguous: passed as is
            seconds = times / 1e9
            values = np.sin(2 * np.pi * 5 * seconds) + rng.normal(0, 0.05, per_batch)
            source.send_batch(args.metric, times, values)
            sent += per_batch
            next_start = int(times[-1]) + interval.ns
            # wait until this batch's time has passed, as a live source would
            stop.wait(max(0.0, (next_start - Timestamp.now().posix_ns) / 1e9))
        source.stop()  # flushes; the counters stay readable
        stats = source.stats
    print(f"sent {sent} points in {stats['chunks_published']} chunks", flush=True)
    report = os.environ.get("METRICQ_DEMO_REPORT")  # for `make demo`: sent vs received
    if report:
        with open(report, "w") as f:
            f.write(f"{args.metric} {sent}\n")


if __name__ == "__main__":
    main()
