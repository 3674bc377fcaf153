#!/usr/bin/env bash
# Run a command against a fresh, throw-away RabbitMQ vhost.
#
# Usage: scripts/with-vhost.sh CMD [ARGS...]
#   e.g. scripts/with-vhost.sh go test ./...
#
# Ensures the broker (scripts/broker.sh ensure), creates vhost
# libmetricq-test-<random>, exports
#   METRICQ_TEST_URL    amqp://guest:guest@127.0.0.1:5672/libmetricq-test-<random>
#   METRICQ_TEST_VHOST  libmetricq-test-<random>
# runs CMD, deletes the vhost when done (also on failure or Ctrl-C) and exits
# with CMD's status.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")

if [ $# -eq 0 ]; then
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
fi

"$here/broker.sh" ensure

vhost="libmetricq-test-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() { "$here/broker.sh" vhost-delete "$vhost" || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

METRICQ_TEST_URL=$("$here/broker.sh" vhost-create "$vhost")
METRICQ_TEST_VHOST=$vhost
export METRICQ_TEST_URL METRICQ_TEST_VHOST

rc=0
"$@" || rc=$?
exit "$rc"
