"""A real metricq.Source (the reference Python package) for the interop tests.

Usage: py_source.py URL TOKEN PLAN.json

PLAN is a JSON object written by the Go test:

  {"chunk_size": <int or null>,              optional: Source.chunk_size
   "metrics": [{"name": ..., "metadata": {...},
                "chunk_size": <int or null>}],   chunk_size optional
   "steps": [{"op": "send", "metric": ..., "time": <int ns>, "bits": <uint64>},
             {"op": "flush"}]}

The source connects (source.register), applies the chunk sizes, declares the
metrics with their metadata in one declare_metrics call, runs the steps
(values are given as IEEE-754 bits so that NaN and -0.0 survive JSON), and
stops. It writes JSON lines to stdout: {"event": "declared"},
{"event": "sent", "points": <n>}, {"event": "stopped"}.
"""

import asyncio
import json
import struct
import sys

import metricq


def emit(obj):
    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()


def bits_float(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


class PlanSource(metricq.Source):
    async def task(self):
        # The test drives the source from main(); the task only waits for
        # the stop.
        await self.task_stop_future


async def main(url, token, plan):
    source = PlanSource(token=token, url=url, client_version="libmetricq-interop-test")
    await source.connect()
    if "chunk_size" in plan:
        source.chunk_size = plan["chunk_size"]
    declaration = {}
    for metric in plan["metrics"]:
        if "chunk_size" in metric:
            source[metric["name"]].chunk_size = metric["chunk_size"]
        declaration[metric["name"]] = dict(metric.get("metadata") or {})
    await source.declare_metrics(declaration)
    emit({"event": "declared"})

    sent = 0
    for step in plan["steps"]:
        if step["op"] == "send":
            await source.send(
                step["metric"],
                metricq.Timestamp(step["time"]),
                bits_float(step["bits"]),
            )
            sent += 1
        elif step["op"] == "flush":
            await source.flush()
        else:
            raise ValueError(f"unknown plan step {step!r}")
    emit({"event": "sent", "points": sent})
    # The reference does not flush on stop: the plan ends with a flush.
    await source.stop()
    emit({"event": "stopped"})


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: py_source.py URL TOKEN PLAN.json")
    with open(sys.argv[3]) as f:
        plan = json.load(f)
    asyncio.run(main(sys.argv[1], sys.argv[2], plan))
