#!/usr/bin/env bash
# Install the build/test tools libmetricq needs, if missing. Idempotent.
#
# Usage: scripts/ensure-tools.sh TOOL...
#   gfortran   GNU Fortran compiler            (Debian package gfortran; root)
#   g++        GNU C++ compiler, as c++        (Debian package g++; root)
#   cmake      CMake                           (Debian package cmake; root)
#   pkg-config pkg-config                      (Debian package pkg-config; root)
#   protoc     protobuf compiler               (Debian package protobuf-compiler; root)
#   chromium   headless browser                (Debian package chromium; root)
#   gnuplot    plotting, for `make bench`      (Debian package gnuplot-nox; root)
#   venv       Python virtualenv .venv/ at the repo root with
#              tests/python-requirements.txt installed (metricq, pytest, numpy);
#              skipped while .venv/.stamp-<hash of that file> exists.
#              Python: $PYTHON, default python3. Also the Python headers
#              the binding's C extension compiles against (Debian package
#              python3-dev for Debian's own Python; root).
#
# As non-root, a missing Debian package makes this print the command to run
# and exit 1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# ensure_cmd COMMAND PACKAGE
ensure_cmd() {
	if command -v "$1" >/dev/null; then
		log "$1 is installed ($(command -v "$1"))"
	else
		apt_install "$2"
		command -v "$1" >/dev/null || die "$2 installed but $1 not found"
	fi
}

ensure_venv() {
	local venv=$LIBMETRICQ_ROOT/.venv req=$LIBMETRICQ_ROOT/tests/python-requirements.txt
	local py=${PYTHON:-python3} hash stamp
	hash=$(sha256sum "$req" | cut -c1-16)
	stamp=$venv/.stamp-$hash
	if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
		log "$venv is broken (its python does not run); recreating"
		rm -rf "$venv"
	fi
	if [ -e "$stamp" ]; then
		log "$venv is up to date"
		ensure_python_headers "$venv/bin/python"
		return 0
	fi
	if [ ! -e "$venv" ]; then
		log "creating $venv with $py ($("$py" --version 2>&1))"
		if ! "$py" -m venv "$venv"; then
			# Debian's own python3 needs python3-venv for ensurepip.
			rm -rf "$venv"
			apt_install python3-venv
			"$py" -m venv "$venv"
		fi
	fi
	log "installing $req into $venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
	rm -f "$venv"/.stamp-*
	touch "$stamp"
	log "$venv ready"
	ensure_python_headers "$venv/bin/python"
}

# ensure_python_headers PYTHON: Python.h for the binding's C extension
# (libmetricq._fastsend), which `make python` builds and the tests expect.
ensure_python_headers() {
	local include
	include=$("$1" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
	if [ -e "$include/Python.h" ]; then
		log "Python headers are installed ($include)"
		return 0
	fi
	case $include in
	/usr/include/*) apt_install python3-dev ;;
	*) die "no Python.h in $include: install the headers of the Python at $("$1" -c 'import sys; print(sys.base_prefix)')" ;;
	esac
	[ -e "$include/Python.h" ] || die "python3-dev installed but $include/Python.h is missing"
}

[ $# -ge 1 ] || usage
for tool; do
	case $tool in
	gfortran) ensure_cmd gfortran gfortran ;;
	g++) ensure_cmd c++ g++ ;;
	cmake) ensure_cmd cmake cmake ;;
	pkg-config) ensure_cmd pkg-config pkg-config ;;
	protoc) ensure_cmd protoc protobuf-compiler ;;
	chromium) ensure_cmd chromium chromium ;;
	gnuplot) ensure_cmd gnuplot gnuplot-nox ;;
	venv) ensure_venv ;;
	*) usage ;;
	esac
done
