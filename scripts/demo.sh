#!/usr/bin/env bash
# Try libmetricq locally, in one command: a RabbitMQ broker, the local MetricQ
# manager, the example sources of every language side by side, and a live
# view of what arrives (per metric: points, rate, latest value; in the
# terminal and in the browser). After $DEMO_SECONDS, or on Ctrl-C, it stops
# everything it started and prints points sent vs received per metric.
#
# Usage: scripts/demo.sh          (make demo: the same, building the C library first)
#
# Environment:
#   DEMO_SECONDS  how long the sources run (default 20; 0: until Ctrl-C)
#   DEMO_HTTP     [HOST]:PORT of the browser view (default 127.0.0.1:8080, any
#                 free port when that is taken; "off": none)
#   DEMO_URL      broker URL with its vhost (default: scripts/broker.sh ensure,
#                 then the vhost libmetricq-demo of the local broker)
#   DEMO_DIR      binaries, logs and reports (default build/demo)
#   DEMO_ONLY     space-separated names of the examples to run (default: all)
#   DEMO_SUMMARY  also write the summary as JSON to this file
#
# Exit status 0 when every metric arrived; 1 when a metric's points did not
# (all or some), an example failed, or the setup failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LIBMETRICQ_ROOT"

SECONDS_TO_RUN=${DEMO_SECONDS:-20}
HTTP=${DEMO_HTTP:-127.0.0.1:8080}
DIR=${DEMO_DIR:-build/demo}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BIN=$DIR/bin
LOGS=$DIR/logs
REPORTS=$DIR/reports
MANAGER=$BIN/metricq-manager

# The example sources, one line each:
#   example NAME NEEDS TOOLS BUILD RUN
# NEEDS is a file that must exist, else the example is skipped (not written
# yet); TOOLS are the names (scripts/ensure-tools.sh) of what BUILD and RUN
# use besides Go; BUILD is run once per distinct command before anything
# starts; RUN is
# run by bash from the repository root with
#   METRICQ_URL          the broker URL (management vhost)
#   METRICQ_DEMO_REPORT  where to write "<metric> <points sent>" lines when
#                        stopping (optional, but then sent vs received is
#                        not checked for its metrics)
# It must run until SIGINT (or end on its own, exit status 0), and on SIGINT
# stop cleanly: publish what is buffered, write the report, exit 0.
# shellcheck disable=SC2016 # $METRICQ_URL is expanded by the example's bash
examples() {
	local bin go_build c_build
	bin=$(printf %q "$BIN")
	go_build="go build -o $bin/ ./examples/go/interval ./examples/go/source"
	c_build="make --no-print-directory -s -f mk/capi.mk examples-c"
	example go-interval examples/go/interval/main.go "" "$go_build" "$bin/interval -token source-demo-go-interval"
	example go-batch examples/go/source/main.go "" "$go_build" "$bin/source -token source-demo-go-batch -duration 0"
	example c-interval examples/c/interval_source.c cc "$c_build" 'build/examples/c/interval_source "$METRICQ_URL" source-demo-c-interval 0'
	example fortran-heat examples/fortran/heat_simulation.f90 "cc gfortran" "make --no-print-directory -s examples-fortran" "build/examples/fortran/heat_simulation \"\$METRICQ_URL\" source-demo-fortran-heat $(( SECONDS_TO_RUN > 1 ? (SECONDS_TO_RUN - 1) * 20 : 100000000 ))"
	example python-interval examples/python/interval_source.py "cc venv" "make --no-print-directory -s python" "env PYTHONPATH=bindings/python .venv/bin/python examples/python/interval_source.py --token source-demo-python-interval"
	example python-batch examples/python/batch_source.py "cc venv" "make --no-print-directory -s python" "env PYTHONPATH=bindings/python .venv/bin/python examples/python/batch_source.py --token source-demo-python-batch"
	example c-batch examples/c/batch_source.c cc "$c_build" 'build/examples/c/batch_source "$METRICQ_URL" source-demo-c-batch 0'
}

# The manager's configuration per token (interval sources read "rate", in Hz).
manager_config() {
	cat <<-'EOF'
	{
	  "source-demo-go-interval": {"rate": 10},
	  "source-demo-c-interval": {"rate": 10, "prefix": "example.c.sysinfo"},
	  "source-demo-python-interval": {"rate": 10},
	  "source-demo-fortran-interval": {"rate": 10}
	}
	EOF
}

say() { printf 'demo: %s\n' "$*" >&2; }

names=() needs=() tools=() builds=() runs=()
example() {
	names+=("$1") needs+=("$2") tools+=("$3") builds+=("$4") runs+=("$5")
}

# Process groups we started (each child runs in a session of its own, so
# that Ctrl-C reaches only this script, which then stops them in order).
pids=()
manager_pid='' watch_pid=''

# start LOG COMMAND...: run COMMAND in the background in its own session
# (LOG "-": output not redirected), with SIGINT restored to its default (bash
# makes background jobs ignore it). $! is its PID and process group.
start() {
	local log=$1
	shift
	if [ "$log" = - ]; then
		setsid env --default-signal=INT "$@" &
	else
		setsid env --default-signal=INT "$@" >"$log" 2>&1 &
	fi
	pids+=($!)
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_gone PID SECONDS: wait until PID has exited; 1 if it has not in time.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		alive "$1" || return 0
		sleep 0.1
	done
	return 1
}

# stop PID...: SIGINT to each group (once: a second one may cut a clean stop
# short), then SIGTERM to what still runs after 10 s, SIGKILL after 3 more.
stop() {
	local pid
	for pid; do kill -INT -- "-$pid" 2>/dev/null || true; done
	for pid; do
		wait_gone "$pid" 10 && continue
		say "process group $pid did not stop within 10 s of SIGINT; sending SIGTERM"
		kill -TERM -- "-$pid" 2>/dev/null || true
		wait_gone "$pid" 3 && continue
		kill -KILL -- "-$pid" 2>/dev/null || true
	done
}

# shellcheck disable=SC2317,SC2329 # called by the EXIT trap
cleanup() {
	local rc=$? pid
	trap - INT TERM
	for pid in "${pids[@]}"; do
		if alive "$pid"; then
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	exit "$rc"
}
trap cleanup EXIT

interrupted=0
# shellcheck disable=SC2317,SC2329 # called by the INT and TERM traps
on_signal() {
	if [ "$interrupted" = 1 ]; then
		say "interrupted again: killing everything"
		exit 130
	fi
	interrupted=1
	if [ -n "${sleeper:-}" ]; then kill "$sleeper" 2>/dev/null || true; fi
}
trap on_signal INT TERM

# --- build ------------------------------------------------------------------
examples
selected=()
for i in "${!names[@]}"; do
	if [ -n "${DEMO_ONLY:-}" ] && [[ " $DEMO_ONLY " != *" ${names[i]} "* ]]; then
		continue
	fi
	if [ ! -e "${needs[i]}" ]; then
		say "skipping ${names[i]}: ${needs[i]} does not exist yet"
		continue
	fi
	selected+=("$i")
done
[ "${#selected[@]}" -gt 0 ] || die "no example to run (DEMO_ONLY=${DEMO_ONLY:-})"

# What the selected examples use, and the broker unless one is given, all
# ensured at once: installed as root, else named in one message.
demo_tools=()
for i in "${selected[@]}"; do
	for tool in ${tools[i]}; do
		[[ " ${demo_tools[*]} " == *" $tool "* ]] || demo_tools+=("$tool")
	done
done
[ -n "${DEMO_URL:-}" ] || demo_tools+=(broker)
if [ "${#demo_tools[@]}" -gt 0 ]; then
	scripts/ensure-tools.sh "${demo_tools[@]}" || die "the demo needs ${demo_tools[*]}; see above"
fi

mkdir -p "$BIN" "$LOGS"
rm -rf "$REPORTS" "$DIR/ready" "$LOGS"/*.log
mkdir -p "$REPORTS"
say "building"
go build -o "$MANAGER" ./cmd/metricq-manager
declare -A built=()
for i in "${selected[@]}"; do
	b=${builds[i]}
	[ -z "$b" ] || [ -n "${built[$b]:-}" ] && continue
	built[$b]=1
	if ! bash -c "$b" >"$LOGS/build.log" 2>&1; then
		cat "$LOGS/build.log" >&2
		die "building ${names[i]} failed: $b"
	fi
done

# --- broker and manager --------------------------------------------------------
if [ -n "${DEMO_URL:-}" ]; then
	URL=$DEMO_URL
else
	URL=$(scripts/broker.sh vhost-create libmetricq-demo)
fi
manager_config >"$DIR/manager-config.json"
start "$LOGS/manager.log" "$MANAGER" -config "$DIR/manager-config.json" "$URL"
manager_pid=$!
for ((i = 0; ; i++)); do
	grep -q "MetricQ manager running" "$LOGS/manager.log" 2>/dev/null && break
	if ! alive "$manager_pid" || ((i > 300)); then
		cat "$LOGS/manager.log" >&2
		die "the MetricQ manager did not start (is another one running on this vhost? a stale demo?)"
	fi
	[ "$interrupted" = 1 ] && exit 130
	sleep 0.1
done
say "broker $(printf '%s' "$URL" | sed 's|//\([^:/@]*\):[^@]*@|//\1:xxxxx@|'), manager running (log: $LOGS/manager.log)"

# --- the live view ---------------------------------------------------------------
watch_args=(-title "libmetricq demo" -ready "$DIR/ready" -reports "$REPORTS" -check)
[ -n "${DEMO_SUMMARY:-}" ] && watch_args+=(-summary "$DEMO_SUMMARY")
if [ "$HTTP" != off ]; then
	if [ -z "${DEMO_HTTP:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
		HTTP=127.0.0.1:0 # 8080 is taken; any free port
	fi
	watch_args+=(-http "$HTTP")
fi
run_names=()
for i in "${selected[@]}"; do run_names+=("${names[i]}"); done
if [ "$SECONDS_TO_RUN" = 0 ]; then
	say "running ${run_names[*]} until Ctrl-C"
else
	say "running ${run_names[*]} for ${SECONDS_TO_RUN}s (Ctrl-C stops earlier)"
fi
start - "$MANAGER" watch "${watch_args[@]}" "$URL"
watch_pid=$!
for ((i = 0; ; i++)); do
	[ -s "$DIR/ready" ] && break
	if ! alive "$watch_pid" || ((i > 300)); then
		wait "$watch_pid" || true
		die "metricq-manager watch did not start"
	fi
	[ "$interrupted" = 1 ] && exit 130
	sleep 0.1
done

# --- the examples --------------------------------------------------------------
example_pids=() example_names=()
for i in "${selected[@]}"; do
	METRICQ_URL=$URL METRICQ_DEMO_REPORT=$REPORTS/${names[i]} \
		start "$LOGS/${names[i]}.log" bash -c "exec ${runs[i]}"
	example_pids+=($!) example_names+=("${names[i]}")
done

if [ "$interrupted" = 0 ]; then
	if [ "$SECONDS_TO_RUN" = 0 ]; then
		sleep infinity &
	else
		sleep "$SECONDS_TO_RUN" &
	fi
	sleeper=$!
	wait "$sleeper" 2>/dev/null || true
fi

# --- stop, in order: the sources flush, then watch counts -----------------------
stop "${example_pids[@]}"
failed=()
for j in "${!example_pids[@]}"; do
	rc=0
	wait "${example_pids[j]}" || rc=$?
	case $rc in
	0 | 130) ;; # ended on its own, or stopped by SIGINT
	*) failed+=("${example_names[j]}:$rc") ;;
	esac
done
rc=0
kill -TERM "$watch_pid" 2>/dev/null || true
wait "$watch_pid" || rc=$?
stop "$manager_pid"

for f in "${failed[@]}"; do
	name=${f%:*}
	say "example $name failed (exit status ${f##*:}); the end of $LOGS/$name.log:"
	tail -n 15 "$LOGS/$name.log" | sed 's/^/    /' >&2
done
say "logs: $LOGS/"
if [ "${#failed[@]}" -gt 0 ] || [ "$rc" -ne 0 ]; then
	exit 1
fi
exit 0
