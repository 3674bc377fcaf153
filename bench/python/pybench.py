"""pybench: the Python side of `make bench` (driven by bench/cmd/bench).

Run with .venv/bin/python (the reference metricq 5.4.0 and numpy), with
bindings/python on PYTHONPATH and LIBMETRICQ_PATH pointing at build/lib for
the ``ours-*`` modes. Each mode prints one JSON object on stdout; times are
``time.time_ns()`` (CLOCK_REALTIME, the clock of the driver's sink).

  ours-send  URL TOKEN PREFIX POINTS CHUNK [fast|ctypes|handle]
      libmetricq.SynchronousSource.send, one point per call, int ns times;
      through the C extension libmetricq._fastsend (fast, the default) or,
      as where it could not be built, through ctypes; handle: the metric's
      send, ``source.metric(name).send(time, value)``, through _fastsend.
  ours-batch URL TOKEN PREFIX POINTS CHUNK BATCH
      libmetricq.SynchronousSource.send_batch with numpy int64/float64
      arrays of BATCH points (the times array is computed per batch, timed).
  ref-async  URL TOKEN PREFIX POINTS CHUNK
      the reference metricq.Source: ``await source.send(...)`` per point,
      chunk_size CHUNK, in the asyncio application's own loop.
  ref-sync   URL TOKEN PREFIX POINTS CHUNK
      the reference metricq.SynchronousSource, called from the main thread as
      documented. If its methods fail there (PROTOCOL §8: they look the event
      loop up from the calling thread), the output has {"error": ...} and the
      figures of the same run with that lookup fixed (the loop the source
      stored). chunk_size CHUNK (the wrapper has no setting for it: set on
      the inner Source).
  ref-scale  URL TOKEN PREFIX METRICS POINTS CHUNK
      the reference metricq.Source: ``declare_metrics`` of PREFIX.0 …
      PREFIX.<METRICS-1> in one call (timed; VmRSS before and after), then
      a warm-up round (every metric's first point, its CPU per point apart),
      then POINTS points round-robin over all of them, ``await source.send``
      each (CPU per point; VmRSS after), chunk_size CHUNK; as mqbench scale.

Timestamps advance by 1 us per point, as in bench/c/mqbench.c. The reference
modes get their Timestamp objects built before the clock starts, which
favours the baseline.
"""

import asyncio
import json
import logging
import os
import sys
import time

STEP_NS = 1000


def out(**kw):
    print(json.dumps(kw), flush=True)


def metadata():
    return {"unit": "", "rate": 1000000}


# --- ours ----------------------------------------------------------------------


def ours_send(url, token, prefix, points, chunk, path="fast"):
    if path == "ctypes":  # as installed where the C extension could not be built
        sys.modules["libmetricq._fastsend"] = None
    import libmetricq
    from libmetricq import _lib

    metric = prefix + ".0"
    with libmetricq.SynchronousSource(token=token, url=url, chunk_size=chunk) as src:
        src.declare_metrics({metric: metadata()})
        t = time.time_ns()
        if path == "handle":
            send = src.metric(metric).send
            start, cpu0 = time.time_ns(), time.thread_time_ns()
            for i in range(points):
                t += STEP_NS
                send(t, 0.5)
        else:
            send = src.send
            start, cpu0 = time.time_ns(), time.thread_time_ns()
            for i in range(points):
                t += STEP_NS
                send(metric, t, 0.5)
        sent, cpu = time.time_ns(), time.thread_time_ns() - cpu0
        src.flush()
        flushed = time.time_ns()
    out(start_ns=start, sent_ns=sent, flushed_ns=flushed, points=points, cpu_ns_per_point=cpu / points,
        library=os.path.realpath(libmetricq.LIBRARY_PATH), fast_send=_lib.FAST_SEND)


def ours_batch(url, token, prefix, points, chunk, batch):
    import numpy as np

    import libmetricq

    metric = prefix + ".0"
    with libmetricq.SynchronousSource(token=token, url=url, chunk_size=chunk) as src:
        src.declare_metrics({metric: metadata()})
        steps = np.arange(1, batch + 1, dtype=np.int64) * STEP_NS
        values = np.arange(batch, dtype=np.float64)
        t = time.time_ns()
        start, cpu0 = time.time_ns(), time.thread_time_ns()
        done = 0
        while done < points:
            n = min(batch, points - done)
            times = steps[:n] + t
            src.send_batch(metric, times, values[:n])
            t = int(times[-1])
            done += n
        sent, cpu = time.time_ns(), time.thread_time_ns() - cpu0
        src.flush()
        flushed = time.time_ns()
    out(start_ns=start, sent_ns=sent, flushed_ns=flushed, points=points, cpu_ns_per_point=cpu / points,
        library=os.path.realpath(libmetricq.LIBRARY_PATH))


# --- the reference ---------------------------------------------------------------


def quiet_reference():
    for name in ("metricq", "aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ref_async(url, token, prefix, points, chunk):
    import metricq

    quiet_reference()

    class BenchSource(metricq.Source):
        async def task(self):
            pass

    metric = prefix + ".0"

    async def main():
        src = BenchSource(token=token, url=url)
        await src.connect()
        src.chunk_size = chunk
        await src.declare_metrics({metric: metadata()})
        t0 = time.time_ns()
        stamps = [metricq.Timestamp(t0 + (i + 1) * STEP_NS) for i in range(points)]
        send = src.send
        start, cpu0 = time.time_ns(), time.thread_time_ns()
        for ts in stamps:
            await send(metric, ts, 0.5)
        sent, cpu = time.time_ns(), time.thread_time_ns() - cpu0
        await src.flush()
        flushed = time.time_ns()
        await src.stop()
        return start, sent, flushed, cpu

    start, sent, flushed, cpu = asyncio.run(main())
    out(start_ns=start, sent_ns=sent, flushed_ns=flushed, points=points, cpu_ns_per_point=cpu / points)


def ref_sync(url, token, prefix, points, chunk):
    import metricq
    from metricq.synchronous_source import SynchronousSource

    quiet_reference()

    def on_loop(src, coro, timeout=60):
        # What the wrapper means to do: run coro on the source's own loop
        # (the one its thread stored), from this plain thread.
        return asyncio.run_coroutine_threadsafe(coro, src._source._loop).result(timeout)

    # The as-shipped probe uses a metric outside the sink's bench.<id>.* watch.
    probe = prefix.replace("bench.", "bench.probe.", 1) + ".0"
    metric = prefix + ".0"
    src = SynchronousSource(token=token, url=url)
    result = {}
    try:
        # As shipped and as documented, from this (plain) thread.
        shipped = []
        try:
            src.declare_metrics({probe: metadata()})
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            shipped.append(f"declare_metrics: {type(e).__name__}: {e}")
            on_loop(src, src._source.declare_metrics({probe: metadata()}))
        try:
            src.send(probe, metricq.Timestamp(time.time_ns()), 0.5)
        except Exception as e:  # noqa: BLE001
            shipped.append(f"send: {type(e).__name__}: {e}")
        if not shipped:
            send = src.send
            declare = src.declare_metrics
        else:
            result["error"] = "; ".join(shipped)

            def send(m, ts, v):
                # SynchronousSource.send with block=True, the loop fixed.
                f = asyncio.run_coroutine_threadsafe(src._source.send(m, ts, v), src._source._loop)
                f.exception(60)

            def declare(metrics):
                on_loop(src, src._source.declare_metrics(metrics))

        src._source.chunk_size = chunk  # metrics created from now on
        declare({metric: metadata()})
        t0 = time.time_ns()
        stamps = [metricq.Timestamp(t0 + (i + 1) * STEP_NS) for i in range(points)]
        start, cpu0 = time.time_ns(), time.thread_time_ns()
        for ts in stamps:
            send(metric, ts, 0.5)
        sent, cpu = time.time_ns(), time.thread_time_ns() - cpu0
        on_loop(src, src._source.flush())
        flushed = time.time_ns()
        result.update(start_ns=start, sent_ns=sent, flushed_ns=flushed, points=points, metric=metric, cpu_ns_per_point=cpu / points)
    finally:
        try:
            on_loop(src, src._source.stop())
        finally:
            src._thread.join(30)
    out(**result)
    sys.stdout.flush()
    os._exit(0)  # the reference's loop thread may linger


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def ref_scale(url, token, prefix, metrics, points, chunk):
    import metricq

    quiet_reference()

    class BenchSource(metricq.Source):
        async def task(self):
            pass

    names = [f"{prefix}.{i}" for i in range(metrics)]
    request = {name: {} for name in names}

    async def main():
        src = BenchSource(token=token, url=url)
        await src.connect()
        src.chunk_size = chunk
        rounds = -(-points // metrics)
        t0 = time.time_ns()
        # stamps[0] is the warm-up round's.
        stamps = [metricq.Timestamp(t0 + r * STEP_NS) for r in range(rounds + 1)]
        rss_connected = rss_kb()
        declare0 = time.time_ns()
        await src.declare_metrics(request)
        declare_ns = time.time_ns() - declare0
        rss_declared = rss_kb()
        send = src.send
        start, cpu0 = time.time_ns(), time.thread_time_ns()
        for name in names:
            await send(name, stamps[0], 1.0)
        first_cpu = time.thread_time_ns() - cpu0
        cpu0 = time.thread_time_ns()
        for i in range(points):
            await send(names[i % metrics], stamps[1 + i // metrics], 1.0)
        sent, cpu = time.time_ns(), time.thread_time_ns() - cpu0
        rss_sent = rss_kb()
        await src.flush()
        await src.stop()
        return dict(start_ns=start, sent_ns=sent, points=points, metrics=metrics, declare_ns=declare_ns,
                    first_cpu_ns_per_point=first_cpu / metrics, cpu_ns_per_point=cpu / points,
                    rss_connected_kb=rss_connected, rss_declared_kb=rss_declared, rss_sent_kb=rss_sent)

    out(**asyncio.run(main()))


def main(argv):
    mode = argv[1]
    url, token, prefix = argv[2], argv[3], argv[4]
    nums = [int(a) for a in argv[5:7]]
    if mode == "ours-send":
        ours_send(url, token, prefix, *nums, *argv[7:])
    elif mode == "ours-batch":
        ours_batch(url, token, prefix, *nums, *[int(a) for a in argv[7:]])
    elif mode == "ref-async":
        ref_async(url, token, prefix, *nums)
    elif mode == "ref-sync":
        ref_sync(url, token, prefix, *nums)
    elif mode == "ref-scale":
        ref_scale(url, token, prefix, *nums, int(argv[7]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
