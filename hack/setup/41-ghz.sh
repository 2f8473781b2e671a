#!/usr/bin/env bash
# Builds ghz v0.93.0 (gRPC load generator) into $SIGIL_TOOLS (default
# ~/.cache/sigil/tools, outside the checkout) as ghz@v0.93.0, linked as ghz,
# for hack/bench/authz/run.sh.
set -euo pipefail

VERSION=v0.93.0
TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
BIN=$TOOLS/ghz@$VERSION

if [[ -x $BIN ]]; then
	ln -sfn "ghz@$VERSION" "$TOOLS/ghz"
	echo "41-ghz: cached $BIN"
	exit 0
fi
if ! command -v go >/dev/null; then
	echo "41-ghz: go is missing; install Go 1.26 and rerun" >&2
	exit 1
fi
mkdir -p "$TOOLS"
echo "41-ghz: building ghz $VERSION into $TOOLS (about a minute cold)"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
GOBIN=$SCRATCH CGO_ENABLED=0 go install "github.com/bojand/ghz/cmd/ghz@$VERSION"
mv "$SCRATCH/ghz" "$BIN"
ln -sfn "ghz@$VERSION" "$TOOLS/ghz"
echo "41-ghz: built $BIN"
