#!/usr/bin/env bash
# A real RabbitMQ broker for libmetricq's tests, on 127.0.0.1:5672 (user guest/guest).
#
# Usage:
#   scripts/broker.sh ensure             install rabbitmq-server, curl, openssl, procps
#                                        (Debian packages, root) if missing, start the
#                                        broker if not running, wait until it is up.
#                                        Idempotent; instant when already up.
#   scripts/broker.sh vhost-create NAME  create vhost NAME, give guest full rights on it,
#                                        print its AMQP URL
#   scripts/broker.sh vhost-delete NAME  delete vhost NAME (no error if missing)
#   scripts/broker.sh url NAME           print the AMQP URL of vhost NAME
#   scripts/broker.sh stop               stop the broker (root)
#
# Only the URL goes to stdout; progress goes to stderr. See scripts/with-vhost.sh
# for running a command against a fresh throw-away vhost.
#
# The broker also runs the management plugin on 127.0.0.1:15672 (guest/guest):
# vhost-create/-delete use its HTTP API (milliseconds, works as non-root), and
# fall back to rabbitmqctl (1-2 s per call, root) when it is not reachable.
#
# TLS: ensure also generates a throw-away test CA, a broker certificate (for
# localhost and 127.0.0.1) and a client certificate in $TLS_DIR (openssl; kept
# until they near expiry) and opens a TLS listener on 127.0.0.1:5671
# (verify_peer, fail_if_no_peer_cert=false: a client certificate is checked
# when given, not required). When ensure changes the configuration of a
# running broker it restarts it, after taking the test suites' broker lock
# ($TMPDIR/libmetricq-broker.lock) exclusively, i.e. once no test binary uses
# the broker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
AMQP_PORT=5672
AMQPS_PORT=5671
MGMT_PORT=15672
TLS_DIR=/etc/rabbitmq/libmetricq-tls
BROKER_LOCK=${TMPDIR:-/tmp}/libmetricq-broker.lock
CONFIG_CHANGED=0
START_TIMEOUT=${BROKER_START_TIMEOUT:-120}
CONF_MARKER="# Managed by libmetricq scripts/broker.sh; delete this line to keep your own edits."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

port_open() { timeout 2 bash -c ": </dev/tcp/$1/$2" 2>/dev/null; }

# urlencode STRING: percent-encode everything but RFC 3986 unreserved bytes.
urlencode() {
	local LC_ALL=C s=$1 out='' c i
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in
		[A-Za-z0-9._~-]) out+=$c ;;
		*) out+=$(printf '%%%02X' "'$c") ;;
		esac
	done
	printf '%s' "$out"
}

amqp_url() { printf 'amqp://guest:guest@%s:%s/%s\n' "$HOST" "$AMQP_PORT" "$(urlencode "$1")"; }

# mgmt METHOD PATH [JSON]: call the management HTTP API, print the HTTP status.
# Returns curl's status: 7 = not reachable (plugin off / broker down).
mgmt() {
	command -v curl >/dev/null || return 7
	local args=(-sS -o /dev/null -w '%{http_code}' --max-time 30 -u guest:guest -X "$1")
	[ $# -ge 3 ] && args+=(-H 'content-type: application/json' --data "$3")
	curl "${args[@]}" "http://$HOST:$MGMT_PORT$2" 2>/dev/null
}

write_config() {
	# Write FILE with CONTENT unless FILE exists and is not ours (no marker line).
	local file=$1 content=$2
	if [ -e "$file" ] && [ "$(head -n1 "$file")" != "${content%%$'\n'*}" ]; then
		log "leaving $file alone (not written by this script)"
		return 0
	fi
	if [ "$(cat "$file" 2>/dev/null)" != "$content" ]; then
		log "writing $file"
		mkdir -p "$(dirname "$file")"
		printf '%s\n' "$content" >"$file"
		CONFIG_CHANGED=1
	fi
}

# cert_ok FILE: FILE is a certificate valid for 30 more days.
cert_ok() { [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend $((30 * 86400)) >/dev/null 2>&1; }

# gen_tls: the test CA, broker and client certificates, unless present and valid.
gen_tls() {
	if cert_ok "$TLS_DIR/ca.pem" && cert_ok "$TLS_DIR/server.pem" && cert_ok "$TLS_DIR/client.pem" &&
		[ -s "$TLS_DIR/server.key" ] && [ -s "$TLS_DIR/client.key" ]; then
		return 0
	fi
	log "generating a test CA and certificates in $TLS_DIR"
	local tmp
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
			-subj "/CN=libmetricq test CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
		for who in server client; do
			openssl req -newkey rsa:2048 -nodes -keyout "$who.key" -out "$who.csr" \
				-subj "/CN=$([ $who = server ] && echo localhost || echo libmetricq-test-client)" 2>/dev/null
			if [ $who = server ]; then
				printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext
			else
				printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >ext
			fi
			openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$who.pem" \
				-days 825 -extfile ext 2>/dev/null
		done
	) || { rm -rf "$tmp"; die "generating test certificates failed"; }
	mkdir -p "$TLS_DIR"
	install -m 0600 "$tmp/ca.key" "$TLS_DIR/ca.key"
	install -m 0644 "$tmp/ca.pem" "$tmp/server.pem" "$tmp/client.pem" "$TLS_DIR/"
	# Test material for a loopback-only broker: the client key is readable
	# by the (possibly non-root) test suites.
	install -m 0644 "$tmp/client.key" "$TLS_DIR/client.key"
	install -m 0640 "$tmp/server.key" "$TLS_DIR/server.key"
	chgrp rabbitmq "$TLS_DIR/server.key" 2>/dev/null || chmod 0644 "$TLS_DIR/server.key"
	chmod 0755 "$TLS_DIR"
	rm -rf "$tmp"
	CONFIG_CHANGED=1
}

configure() {
	gen_tls
	write_config /etc/rabbitmq/rabbitmq.conf "$CONF_MARKER
# AMQP and the management API only on loopback (guest may only log in from there anyway).
listeners.tcp.default = $HOST:$AMQP_PORT
management.tcp.ip = $HOST
management.tcp.port = $MGMT_PORT
# TLS listener for the TLS tests, with the throw-away test CA of $TLS_DIR.
listeners.ssl.default = $HOST:$AMQPS_PORT
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false"
	# Erlang term file; it has no comment syntax that rabbitmq-plugins keeps, so
	# only create it when missing.
	if [ ! -e /etc/rabbitmq/enabled_plugins ]; then
		log "enabling rabbitmq_management"
		printf '[rabbitmq_management].\n' >/etc/rabbitmq/enabled_plugins
		chown rabbitmq:rabbitmq /etc/rabbitmq/enabled_plugins 2>/dev/null || true
	fi
}

show_logs() {
	log "broker logs:"
	tail -n 30 /var/log/rabbitmq/startup_err /var/log/rabbitmq/*.log 2>/dev/null >&2 || true
}

cmd_ensure() {
	# RabbitMQ and what this script runs besides (curl, openssl, pgrep).
	"$LIBMETRICQ_ROOT/scripts/ensure-tools.sh" --packages broker
	if is_root; then
		configure
	fi
	if port_open "$HOST" "$AMQP_PORT"; then
		if [ "$CONFIG_CHANGED" = 1 ] || { grep -q '^listeners.ssl.default' /etc/rabbitmq/rabbitmq.conf 2>/dev/null &&
			head -n1 /etc/rabbitmq/rabbitmq.conf | grep -qF "$CONF_MARKER" && ! port_open "$HOST" "$AMQPS_PORT"; }; then
			need_root "restarting RabbitMQ with its new configuration" "$0 ensure"
			restart_broker
			return 0
		fi
		log "broker is running on $HOST:$AMQP_PORT"
		return 0
	fi
	need_root "starting RabbitMQ" "$0 ensure"
	start_broker
}

# restart_broker: stop and start the broker, once no test binary uses it.
restart_broker() {
	log "configuration changed: restarting the broker once no test suite uses it (lock $BROKER_LOCK)"
	exec 9>>"$BROKER_LOCK"
	chmod 0666 "$BROKER_LOCK" 2>/dev/null || true
	if ! flock -x -w 900 9; then
		die "the broker is still in use by tests after 15 min; restart it later with: $0 ensure"
	fi
	if [ -d /run/systemd/system ]; then
		systemctl stop rabbitmq-server
	else
		rabbitmqctl -q stop 2>/dev/null || true
	fi
	local t0=$SECONDS
	while port_open "$HOST" "$AMQP_PORT"; do
		((SECONDS - t0 > 60)) && die "broker did not stop within 60s"
		sleep 0.5
	done
	start_broker
	exec 9>&-
}

start_broker() {
	local t0=$SECONDS
	if [ -d /run/systemd/system ]; then
		log "starting rabbitmq-server (systemd)"
		systemctl start rabbitmq-server
	else
		log "starting rabbitmq-server -detached"
		# Own session, so a Ctrl-C in the terminal that started it won't reach it.
		(cd / && setsid rabbitmq-server -detached) </dev/null 9>&-
	fi
	until port_open "$HOST" "$AMQP_PORT"; do
		if ((SECONDS - t0 > START_TIMEOUT)); then
			show_logs
			die "broker did not open $HOST:$AMQP_PORT within ${START_TIMEOUT}s"
		fi
		if ((SECONDS - t0 > 5)) && ! pgrep -u rabbitmq beam >/dev/null; then
			show_logs
			die "broker exited during startup"
		fi
		sleep 0.5
	done
	if ! timeout "$START_TIMEOUT" rabbitmqctl -q await_startup --timeout "$START_TIMEOUT"; then
		show_logs
		die "rabbitmqctl await_startup failed"
	fi
	if grep -q '^listeners.ssl.default' /etc/rabbitmq/rabbitmq.conf 2>/dev/null && ! port_open "$HOST" "$AMQPS_PORT"; then
		show_logs
		log "warning: the TLS listener on $HOST:$AMQPS_PORT did not open (the TLS tests will fail)"
	fi
	# The default user guest is an administrator (needed for the management API);
	# make sure, in case the node was set up otherwise.
	if [[ $(curl -sS -u guest:guest "http://$HOST:$MGMT_PORT/api/whoami" 2>/dev/null) != *administrator* ]]; then
		rabbitmqctl -q set_user_tags guest administrator || log "warning: could not tag guest as administrator"
	fi
	log "broker up on $HOST:$AMQP_PORT after $((SECONDS - t0))s"
}

cmd_vhost_create() {
	local name=$1 enc code rc=0
	enc=$(urlencode "$name")
	code=$(mgmt PUT "/api/vhosts/$enc") || rc=$?
	if [ "$rc" -eq 0 ]; then
		case $code in 201 | 204) ;; *) die "creating vhost $name: HTTP $code" ;; esac
		code=$(mgmt PUT "/api/permissions/$enc/guest" '{"configure":".*","write":".*","read":".*"}') ||
			die "setting permissions on vhost $name failed"
		case $code in 201 | 204) ;; *) die "setting permissions on vhost $name: HTTP $code" ;; esac
	elif [ "$rc" -eq 7 ]; then
		local out
		if ! out=$(rabbitmqctl -q add_vhost "$name" 2>&1) && [[ $out != *already* ]]; then
			printf '%s\n' "$out" >&2
			die "creating vhost $name failed"
		fi
		rabbitmqctl -q set_permissions -p "$name" guest ".*" ".*" ".*"
	else
		die "management API request failed (curl exit $rc)"
	fi
	amqp_url "$name"
}

cmd_vhost_delete() {
	local name=$1 enc code rc=0
	enc=$(urlencode "$name")
	code=$(mgmt DELETE "/api/vhosts/$enc") || rc=$?
	if [ "$rc" -eq 0 ]; then
		case $code in 204 | 404) ;; *) die "deleting vhost $name: HTTP $code" ;; esac
	else
		rabbitmqctl -q delete_vhost "$name" >/dev/null 2>&1 || true
	fi
}

cmd_stop() {
	need_root "stopping RabbitMQ" "$0 stop"
	if [ -d /run/systemd/system ]; then
		systemctl stop rabbitmq-server
	elif command -v rabbitmqctl >/dev/null; then
		rabbitmqctl -q stop 2>/dev/null || log "broker was not running"
	fi
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case $cmd in
ensure) [ $# -eq 0 ] || usage; cmd_ensure ;;
vhost-create) [ $# -eq 1 ] && [ -n "$1" ] || usage; cmd_vhost_create "$1" ;;
vhost-delete) [ $# -eq 1 ] && [ -n "$1" ] || usage; cmd_vhost_delete "$1" ;;
url) [ $# -eq 1 ] || usage; amqp_url "$1" ;;
stop) [ $# -eq 0 ] || usage; cmd_stop ;;
-h | --help | help) usage ;;
*) usage ;;
esac
