#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, postgres) are installed:
# the ca/store/sqlstore PostgreSQL tests start a real, throwaway server through
# internal/pgtest. On Debian as root it installs the postgresql package when
# missing; elsewhere it says what to install and exits 1.
#
# Tests look in $SIGIL_POSTGRES_BIN (a directory holding initdb and
# postgres), else the newest /usr/lib/postgresql/*/bin, else initdb on PATH.
set -euo pipefail

found() {
	if [[ -n "${SIGIL_POSTGRES_BIN:-}" ]]; then
		[[ -x "$SIGIL_POSTGRES_BIN/initdb" && -x "$SIGIL_POSTGRES_BIN/postgres" ]]
		return
	fi
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
	local initdb
	initdb="$(command -v initdb 2>/dev/null)" && [[ -x "$(dirname "$initdb")/postgres" ]]
}

found && exit 0

if [[ -n "${SIGIL_POSTGRES_BIN:-}" ]]; then
	echo "SIGIL_POSTGRES_BIN=$SIGIL_POSTGRES_BIN holds no initdb and postgres: point it at PostgreSQL's bin directory" >&2
	exit 1
fi

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
	echo "installing postgresql (Debian package)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	fi
	# The package may start a cluster of its own; the tests do not use it.
	found && exit 0
	echo "postgresql installed, but no /usr/lib/postgresql/*/bin/initdb found" >&2
	exit 1
fi

echo "missing: PostgreSQL server binaries (initdb, postgres) for the ca/store/sqlstore PostgreSQL tests." >&2
echo "  Debian/Ubuntu: apt-get install postgresql    Fedora: dnf install postgresql-server" >&2
echo "  macOS: brew install postgresql               or set SIGIL_POSTGRES_BIN to a directory holding initdb and postgres" >&2
exit 1
