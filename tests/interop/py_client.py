"""A real metricq.Client (the reference Python package) that calls RPCs of
another client, for the interop tests.

Usage: py_client.py URL TOKEN TARGET_TOKEN CONFIG.json

It connects, then
  1. broadcasts "discover" on metricq.broadcast (as metricq-discover does:
     one correlation id, many replies) and keeps the replies whose app_id is
     TARGET_TOKEN, until the first has arrived;
  2. sends each object of CONFIG.json (a JSON array) as a direct "config" RPC
     to TARGET_TOKEN-rpc on the default exchange (as the wizard does);
  3. sends the unknown function "interop.nonexistent" the same way.
It prints one JSON object on stdout:

  {"event": "result",
   "discover": [{"reply": {...}, "types": {key: python type name},
                 "currentTime_ns": <int or error text>,
                 "startingTime_ns": <int or error text>}],
   "config": [{"reply": {...}, "from_token": ...} or {"error": ...}],
   "unknown": {"reply": ...} or {"error": ...}}
"""

import asyncio
import json
import sys

import metricq
from metricq.agent import Agent
from metricq.exceptions import RPCError

TIMEOUT = 30


def emit(obj):
    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()


def parse_iso(text):
    try:
        return metricq.Timestamp.from_iso8601(text).posix_ns
    except Exception as e:  # reported to the test, which fails on it
        return f"{type(e).__name__}: {e}"


class InteropClient(metricq.Client):
    pass


async def direct_rpc(client, target, function, **kwargs):
    # Agent.rpc with an explicit exchange, as the manager and the wizard
    # call a client's RPC queue ("Client.rpc" always uses
    # metricq.management).
    try:
        reply = await Agent.rpc(
            client,
            exchange=client._management_channel.default_exchange,
            routing_key=f"{target}-rpc",
            function=function,
            timeout=TIMEOUT,
            **kwargs,
        )
    except RPCError as e:
        return {"error": str(e.args[0]) if e.args else str(e)}
    from_token = reply.pop("from_token", None)
    return {"reply": reply, "from_token": from_token}


async def main(url, token, target, configs):
    client = InteropClient(token=token, url=url, client_version="libmetricq-interop-test")
    await client.connect()

    replies = []
    got_one = asyncio.Event()

    def on_discover(**reply):
        if reply.get("from_token") != target:
            return  # e.g. our own reply: we are bound to the broadcast too
        reply.pop("from_token")
        replies.append(
            {
                "reply": reply,
                "types": {k: type(v).__name__ for k, v in reply.items()},
                "currentTime_ns": parse_iso(reply.get("currentTime")),
                "startingTime_ns": parse_iso(reply.get("startingTime")),
            }
        )
        got_one.set()

    await Agent.rpc(
        client,
        exchange=client._management_broadcast_exchange,
        routing_key="discover",
        function="discover",
        response_callback=on_discover,
        cleanup_on_response=False,
        timeout=TIMEOUT,
    )
    await asyncio.wait_for(got_one.wait(), TIMEOUT)

    config_results = []
    for config in configs:
        config_results.append(await direct_rpc(client, target, "config", **config))
    unknown = await direct_rpc(client, target, "interop.nonexistent", answer=42)

    emit(
        {
            "event": "result",
            "discover": replies,
            "config": config_results,
            "unknown": unknown,
        }
    )
    await client.stop()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: py_client.py URL TOKEN TARGET_TOKEN CONFIG.json")
    with open(sys.argv[4]) as f:
        configs = json.load(f)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], configs))
