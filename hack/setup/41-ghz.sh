#!/usr/bin/env bash
# Builds ghz v0.93.0 (gRPC load generator) into $SIGIL_TOOLS (default .cache/tools)
# for hack/bench/authz/run.sh.
set -euo pipefail

VERSION=v0.93.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=${SIGIL_TOOLS:-$ROOT/.cache/tools}

if [[ -x $TOOLS/ghz ]]; then
	exit 0
fi
if ! command -v go >/dev/null; then
	echo "41-ghz: go is missing; install Go 1.26 and rerun" >&2
	exit 1
fi
mkdir -p "$TOOLS"
GOBIN=$TOOLS CGO_ENABLED=0 go install "github.com/bojand/ghz/cmd/ghz@$VERSION"
echo "41-ghz: built $TOOLS/ghz"
