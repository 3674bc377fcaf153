"""A real metricq.Sink (the reference Python package) for the interop tests.

Usage: py_sink.py URL TOKEN METRIC...

Subscribes to METRIC... through the manager (sink.subscribe) and writes one
JSON object per line to stdout, flushed at once:

  {"event": "ready", "token": ..., "dataQueue": ..., "metrics": {...}}
      once subscribed and consuming (metrics: the subscribe reply's metadata)
  {"metric": ..., "time": <int ns>, "value": <number or null>, "bits": <uint64>}
      for every received point, in arrival order; "value" is null for NaN
      and +-Inf (JSON has no such numbers), "bits" the IEEE-754 bits
  {"event": "chunk", "metric": ..., "points": <n>}
      after the points of each data message
  {"event": "stopped"}
      after a clean stop

It stops when stdin reaches EOF (or a line "stop" arrives). Errors go to
stderr and give a non-zero exit status.
"""

import asyncio
import json
import math
import struct
import sys

import metricq


def emit(obj):
    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()


def float_bits(value):
    return struct.unpack("<Q", struct.pack("<d", value))[0]


class InteropSink(metricq.Sink):
    async def _on_data_chunk(self, metric, data_chunk):
        # The reference decoding (running sum of the deltas) runs in
        # super(); on_data below prints each point. Afterwards, report the
        # message boundary so that the test can check the chunking.
        await super()._on_data_chunk(metric, data_chunk)
        emit({"event": "chunk", "metric": metric, "points": len(data_chunk.value)})

    async def on_data(self, metric, timestamp, value):
        finite = not (math.isnan(value) or math.isinf(value))
        emit(
            {
                "metric": metric,
                "time": timestamp.posix_ns,
                "value": value if finite else None,
                "bits": float_bits(value),
            }
        )


async def wait_for_stop_request():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line == "" or line.strip() == "stop":
            return


async def main(url, token, metrics):
    sink = InteropSink(token=token, url=url, client_version="libmetricq-interop-test")
    await sink.connect()
    reply = await sink.subscribe(metrics)
    emit(
        {
            "event": "ready",
            "token": sink.token,
            "dataQueue": reply.get("dataQueue"),
            "metrics": reply.get("metrics"),
        }
    )
    await wait_for_stop_request()
    await sink.stop()
    emit({"event": "stopped"})


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: py_sink.py URL TOKEN METRIC...")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
