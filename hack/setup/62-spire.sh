#!/usr/bin/env bash
# SPIRE server and agent v1.14.5 — the federation peer of hack/e2e/spire and
# the benchmark peer of hack/bench — built from the Go module proxy into
# $SIGIL_TOOLS (default ~/.cache/sigil/tools, outside the checkout) as
# NAME@VERSION, linked as NAME. Tests find them on PATH or there.
# Built without cgo, so SPIRE's SQLite datastore is left out: the tests give
# spire-server a PostgreSQL (internal/pgtest).
# The proxy here is a partial mirror and its checksum database lacks some of
# SPIRE's modules: the build runs in a scratch module that pins SPIRE and
# uses SPIRE's own go.sum. Several minutes cold, seconds once cached.
set -euo pipefail

VERSION=v1.14.5
TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
mkdir -p "$TOOLS"

need=()
for t in spire-server spire-agent; do
	if [[ -x $TOOLS/$t@$VERSION ]]; then
		ln -sfn "$t@$VERSION" "$TOOLS/$t"
		echo "62-spire: cached $TOOLS/$t@$VERSION"
	else
		need+=("$t")
	fi
done
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v go >/dev/null; then
	echo "62-spire: go is missing; install Go 1.26 and rerun" >&2
	exit 1
fi
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH"
echo "62-spire: resolving github.com/spiffe/spire@$VERSION"
DIR=$(GOFLAGS=-mod=mod go mod download -json "github.com/spiffe/spire@$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
cat >go.mod <<MOD
module scratch/spire

go 1.26

require github.com/spiffe/spire $VERSION
MOD
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/spiffe/spire/cmd/spire-agent"
	_ "github.com/spiffe/spire/cmd/spire-server"
)
GO
cp "$DIR/go.sum" go.sum
chmod u+w go.sum
# SPIRE's own go.sum covers its modules; the checksum database here lacks some.
export GOFLAGS=-mod=mod
GOSUMDB=off go mod tidy >/dev/null
for t in "${need[@]}"; do
	echo "62-spire: building $t $VERSION into $TOOLS (minutes cold)"
	start=$SECONDS
	GOSUMDB=off CGO_ENABLED=0 go build -o "$TOOLS/$t@$VERSION.tmp" "github.com/spiffe/spire/cmd/$t"
	mv "$TOOLS/$t@$VERSION.tmp" "$TOOLS/$t@$VERSION"
	ln -sfn "$t@$VERSION" "$TOOLS/$t"
	echo "62-spire: built $TOOLS/$t@$VERSION in $((SECONDS - start)) s"
done
