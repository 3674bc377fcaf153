# shellcheck shell=bash
# Helpers shared by scripts/broker.sh and scripts/ensure-tools.sh.
# Source it, don't run it:   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Provides: LIBMETRICQ_ROOT (repo root), log, die, is_root, need_root,
# apt_update_once and apt_install (Debian packages, root only).

# shellcheck disable=SC2034 # used by the scripts that source this
LIBMETRICQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian puts daemons and admin tools (rabbitmq-server, rabbitmqctl) in sbin,
# which is not on every user's PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
export PATH

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# need_root WHAT COMMAND...: exit 1 with instructions unless we are root.
need_root() {
	local what=$1; shift
	is_root && return 0
	log "$what needs root. Run this (as root or with sudo), then try again:"
	printf '    %s\n' "$@" >&2
	exit 1
}

# apt-get update, at most once per $APT_UPDATE_MAX_AGE_MIN minutes across all
# scripts (stamp file), or unconditionally with "force".
APT_UPDATE_STAMP=/var/cache/libmetricq-apt-update.stamp
APT_UPDATE_MAX_AGE_MIN=${APT_UPDATE_MAX_AGE_MIN:-360}
apt_update_once() {
	if [ "${1:-}" != force ] && [ -n "$(find "$APT_UPDATE_STAMP" -mmin -"$APT_UPDATE_MAX_AGE_MIN" 2>/dev/null)" ]; then
		return 0
	fi
	log "apt-get update"
	apt-get -o DPkg::Lock::Timeout=300 update -q && touch "$APT_UPDATE_STAMP"
}

# apt_install PKG...: install Debian packages non-interactively (root only).
# apt's output goes to a log file, shown when the install fails: the few
# hundred lines of a successful install would bury what make test or the
# demo says. Package maintainer scripts must not start services (there is no
# systemd in containers/CI, and we start what we need ourselves), so a
# policy-rc.d that denies every action (exit 101) is in place while
# installing, unless one exists already; ours is removed afterwards, also on
# failure or Ctrl-C.
apt_install() {
	need_root "installing $*" \
		"apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $*"
	local out
	out=$(mktemp "${TMPDIR:-/tmp}/libmetricq-apt.XXXXXX")
	log "apt-get install -y $* (output: $out)"
	if (
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			trap 'rm -f /usr/sbin/policy-rc.d' EXIT
			printf '#!/bin/sh\n# temporary, from libmetricq scripts/lib.sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
		fi
		export DEBIAN_FRONTEND=noninteractive
		apt_update_once && apt-get -o DPkg::Lock::Timeout=300 install -y -q "$@" && exit 0
		# Maybe the package lists were stale (404s): refresh and retry once.
		apt_update_once force && apt-get -o DPkg::Lock::Timeout=300 install -y -q "$@"
	) >"$out" 2>&1; then
		rm -f "$out"
		return 0
	fi
	tail -n 25 "$out" >&2
	log "error: apt-get install $* failed; its whole output: $out"
	return 1
}
