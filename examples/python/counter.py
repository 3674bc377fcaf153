"""The reference's IntervalSource example (metricq.IntervalSource), on
libmetricq: only the import changes and async becomes sync.

Sends an incrementing counter once a second until Ctrl-C:

    python examples/python/counter.py --url amqp://localhost/ --token source-counter
"""

import argparse

from libmetricq import IntervalSource, Timedelta, Timestamp, rpc_handler


class Counter(IntervalSource):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, period=Timedelta.from_s(1), **kwargs)
        self.counter = 0

    @rpc_handler("config")
    def _on_config(self, **_config):
        self.declare_metrics(["example.counter"])

    def update(self):
        self.send("example.counter", time=Timestamp.now(), value=self.counter)
        self.counter += 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://localhost/")
    parser.add_argument("--token", default="source-counter")
    args = parser.parse_args()
    Counter(args.token, args.url).run()
