"""Several Python threads on one source; blocking calls release the GIL."""

import threading
import time

import numpy as np
import pytest

THREADS = 4
POINTS = 1500  # per thread and metric


def test_threads_send_concurrently(make_source, tail, metric_prefix):
    own = [metric_prefix + f"t{i}" for i in range(THREADS)]
    shared = metric_prefix + "shared"
    sink = tail(*own, shared)
    source = make_source(chunk_size=64)
    source.declare_metrics(own + [shared])

    lock = threading.Lock()
    next_time = [1]
    shared_sent = []
    errors = []
    start = threading.Barrier(THREADS)

    def worker(i):
        try:
            metric = own[i]
            start.wait()
            for k in range(POINTS):
                if k % 100 == 99:
                    # now and then a batch of 3
                    source.send_batch(metric, [k * 10, k * 10 + 1, k * 10 + 2], [i, i, float(k)])
                else:
                    source.send(metric, k * 10, float(k))
                if k % 3 == 0:
                    # the shared metric: timestamps handed out and sent under
                    # one lock, so they reach the library in order
                    with lock:
                        t = next_time[0]
                        next_time[0] += 1
                        source.send(shared, t, float(i))
                        shared_sent.append((shared, t, float(i)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    expected = list(shared_sent)
    for i, metric in enumerate(own):
        for k in range(POINTS):
            if k % 100 == 99:
                expected += [(metric, k * 10, float(i)), (metric, k * 10 + 1, float(i)), (metric, k * 10 + 2, float(k))]
            else:
                expected.append((metric, k * 10, float(k)))
    source.stop()
    received = sink.collect(len(expected), timeout=30, grace=0.3)
    assert len(received) == len(expected)  # nothing twice
    assert sorted(received) == sorted(expected)
    for metric in own + [shared]:
        # per metric in the order sent
        assert [p for p in received if p[0] == metric] == sorted(p for p in expected if p[0] == metric)
    assert source.stats["points_confirmed"] == len(expected)


def test_threads_batches_numpy(make_source, tail, metric_prefix):
    metrics = [metric_prefix + f"b{i}" for i in range(THREADS)]
    sink = tail(*metrics)
    source = make_source(chunk_size=1000)
    source.declare_metrics(metrics)
    n, batch = 20000, 1000
    errors = []

    def worker(i):
        try:
            times = np.arange(1, n + 1, dtype=np.int64)
            values = np.full(n, float(i))
            for k in range(0, n, batch):
                source.send_batch(metrics[i], times[k : k + batch], values[k : k + batch])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    source.flush()
    received = sink.collect(THREADS * n, timeout=30, grace=0.3)
    assert len(received) == THREADS * n
    for i, metric in enumerate(metrics):
        assert [p for p in received if p[0] == metric] == [(metric, t, float(i)) for t in range(1, n + 1)]


def test_blocking_call_releases_the_gil(make_source, metric_prefix):
    m = metric_prefix + "a"
    source = make_source(chunk_size=None, max_buffered=1)
    source.declare_metrics([m])
    source.send(m, 1, 1.0)  # the buffer is full now
    entered = threading.Event()
    outcome = []

    def blocked_send():
        entered.set()
        try:
            source.send(m, 2, 2.0, timeout=1.5)
        except TimeoutError:
            outcome.append("timeout")

    worker = threading.Thread(target=blocked_send)
    worker.start()
    entered.wait()
    time.sleep(0.05)  # the worker is in the library now
    start = time.monotonic()
    total = 0
    for k in range(200_000):  # pure Python work, needs the GIL
        total += k
    elapsed = time.monotonic() - start
    assert worker.is_alive(), "the blocked send returned early"
    assert elapsed < 1.0, f"Python work took {elapsed:.2f}s while another thread waited in the library"
    worker.join(10)
    assert outcome == ["timeout"]


@pytest.mark.parametrize("what", ["flush", "stop"])
def test_concurrent_flush_and_stop(make_source, metric_prefix, what):
    m = metric_prefix + "a"
    source = make_source(chunk_size=10)
    source.declare_metrics([m])
    done = threading.Event()
    errors = []

    def sender():
        k = 1
        try:
            while not done.is_set():
                source.send(m, k, 1.0)
                k += 1
        except Exception as e:
            if what != "stop" or type(e).__name__ != "SourceStopped":
                errors.append(e)

    threads = [threading.Thread(target=sender)]
    threads[0].start()
    time.sleep(0.05)
    for _ in range(3):
        getattr(source, what)()
    done.set()
    threads[0].join(10)
    assert not errors, errors
