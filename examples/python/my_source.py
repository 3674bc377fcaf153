"""The reference's Source example (metricq.Source.declare_metrics), on
libmetricq: only the import changes and async becomes sync. The "..." of
the reference's example is filled in with a task that reads a (simulated)
temperature at the configured rate.

The manager's configuration for the token gives the rate (readings per
second); every later "config" RPC applies a new one. Runs until Ctrl-C:

    python examples/python/my_source.py --url amqp://localhost/ --token source-my-source
"""

import argparse
import math

from libmetricq import Source, Timestamp, rpc_handler


class MySource(Source):
    rate = None

    @rpc_handler("config")
    def on_config(self, **config):
        self.rate = config["rate"]
        print(f"configured: rate {self.rate}", flush=True)
        self.declare_metrics(
            {
                "example.temperature": {
                    "description": "an example temperature reading",
                    "unit": "C",
                    "rate": config["rate"],
                    "some_arbitrary_metadata": {
                        "foo": "bar",
                    },
                },
            }
        )

    def task(self):
        while not self.task_stop_event.wait(1 / self.rate):
            now = Timestamp.now()
            self.send("example.temperature", now, 20 + math.sin(now.posix))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://localhost/")
    parser.add_argument("--token", default="source-my-source")
    args = parser.parse_args()
    MySource(args.token, args.url).run()
