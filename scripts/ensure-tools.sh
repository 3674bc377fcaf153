#!/usr/bin/env bash
# Make sure the tools libmetricq's build, tests, demo and benchmarks use are
# there. Idempotent, and quick when nothing is missing.
#
# Usage: scripts/ensure-tools.sh NAME...   ensure each NAME of the table below
#        scripts/ensure-tools.sh --packages NAME...
#                                          only their Debian packages
#        scripts/ensure-tools.sh --names   print the NAMEs
#        scripts/ensure-tools.sh --table   print the table
#
# As root, every missing Debian package of the NAMEs is installed with one
# apt-get install. Otherwise nothing is installed: one message names the exact
# command to run as root, and the exit status is 1.
#
# Besides packages, two NAMEs make something:
#   venv    the virtualenv .venv/ at the repository root with
#           tests/python-requirements.txt installed (metricq, pytest, numpy),
#           redone when that file changes. Python: $PYTHON, default python3;
#           its headers (Python.h) are needed too, for the binding's C
#           extension libmetricq._fastsend.
#   broker  RabbitMQ configured and running (scripts/broker.sh ensure).
#
# The make targets ensure-NAME run this for one NAME; every make rule that
# runs a tool of the table depends on its ensure-NAME (tests/tooling checks
# that, and that every tool a recipe or script runs is in the table or is a
# tool every Debian system has).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# NAME: the tool or step, as given to this script and in ensure-NAME.
# PACKAGE: the Debian package; "-" for what this script makes itself.
# PRESENT WHEN: commands that must be on PATH; a path with a slash is a file
# under the repository root; ":python-headers" and ":python-venv" are checks
# of the Python that makes .venv.
TOOL_TABLE='
# NAME      PACKAGE            PRESENT WHEN
cc          gcc                cc
cc          binutils           ar nm readelf
gfortran    gfortran           gfortran
g++         g++                c++ g++
cmake       cmake              cmake
pkg-config  pkg-config         pkg-config
protoc      protobuf-compiler  protoc
chromium    chromium           chromium
gnuplot     gnuplot-nox        gnuplot
venv        python3            python3
venv        python3-venv       :python-venv
venv        python3-dev        :python-headers
venv        -                  .venv/bin/python
broker      rabbitmq-server    rabbitmq-server rabbitmqctl
broker      curl               curl
broker      openssl            openssl
broker      procps             pgrep
'

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

table_rows() { printf '%s\n' "$TOOL_TABLE" | sed -e '/^#/d' -e '/^ *$/d'; }

PY=${PYTHON:-python3}

# python_include: where the Python that makes .venv keeps Python.h.
python_include() { "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])'; }

# present CHECK: whether one PRESENT WHEN word holds.
present() {
	case $1 in
	:python-venv)
		# A venv that exists needs nothing more; otherwise Debian's own
		# python3 can only make one with python3-venv (ensurepip).
		[ -x "$LIBMETRICQ_ROOT/.venv/bin/python" ] || "$PY" -c 'import ensurepip, venv' 2>/dev/null ;;
	:python-headers)
		local include
		include=$(python_include 2>/dev/null) || return 1
		[ -e "$include/Python.h" ] ;;
	*/*) [ -e "$LIBMETRICQ_ROOT/$1" ] ;;
	*) command -v "$1" >/dev/null ;;
	esac
}

# A Python that is not Debian's own gets no headers from python3-dev: say so
# rather than install a package that cannot help.
check_python_headers_source() {
	local include
	include=$(python_include) || die "$PY does not run"
	case $include in
	/usr/include/*) ;;
	*) die "no Python.h in $include: install the headers of the Python at $("$PY" -c 'import sys; print(sys.base_prefix)') (or set PYTHON to one that has them)" ;;
	esac
}

ensure_venv() {
	local venv=$LIBMETRICQ_ROOT/.venv req=$LIBMETRICQ_ROOT/tests/python-requirements.txt
	local hash stamp
	hash=$(sha256sum "$req" | cut -c1-16)
	stamp=$venv/.stamp-$hash
	if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
		log "$venv is broken (its python does not run); recreating"
		rm -rf "$venv"
	fi
	if [ -e "$stamp" ]; then
		return 0
	fi
	if [ ! -e "$venv" ]; then
		log "creating $venv with $PY ($("$PY" --version 2>&1))"
		"$PY" -m venv "$venv"
	fi
	log "installing $req into $venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
	rm -f "$venv"/.stamp-*
	touch "$stamp"
	log "$venv ready"
}

packages_only=0
case ${1:-} in
--packages) packages_only=1; shift; [ $# -ge 1 ] || usage ;;
--names) table_rows | awk '!seen[$1]++ { print $1 }'; exit 0 ;;
--table) table_rows; exit 0 ;;
'' | -h | --help) usage ;;
esac

known=$(table_rows | awk '{ print $1 }')
for name; do
	grep -qxF -- "$name" <<<"$known" || { log "unknown tool: $name"; usage; }
done

# The Debian packages missing for the NAMEs, each once.
missing=()
while read -r name package checks; do
	[[ " $* " == *" $name "* ]] && [ "$package" != - ] || continue
	[[ " ${missing[*]} " == *" $package "* ]] && continue
	for check in $checks; do
		if ! present "$check"; then
			[ "$check" = :python-headers ] && command -v "$PY" >/dev/null && check_python_headers_source
			missing+=("$package")
			break
		fi
	done
done < <(table_rows)

if [ "${#missing[@]}" -gt 0 ]; then
	steps=("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}")
	# Starting the broker needs root as well; say it in the same message.
	if [[ " $* " == *" broker "* ]] && ! timeout 2 bash -c ': </dev/tcp/127.0.0.1/5672' 2>/dev/null; then
		steps+=("$LIBMETRICQ_ROOT/scripts/broker.sh ensure")
	fi
	need_root "installing ${missing[*]}" "${steps[@]}"
	apt_install "${missing[@]}"
	while read -r name package checks; do
		[[ " ${missing[*]} " == *" $package "* ]] || continue
		for check in $checks; do
			present "$check" || die "$package installed, but $check is still missing"
		done
	done < <(table_rows)
fi

[ "$packages_only" = 1 ] && exit 0
for name; do
	case $name in
	venv) ensure_venv ;;
	broker) "$LIBMETRICQ_ROOT/scripts/broker.sh" ensure ;;
	esac
done
