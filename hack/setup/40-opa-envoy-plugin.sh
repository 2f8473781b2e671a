#!/usr/bin/env bash
# Builds opa-envoy-plugin v1.10.0-envoy into $SIGIL_TOOLS (default
# ~/.cache/sigil/tools, outside the checkout) as opa-envoy-plugin@VERSION,
# linked as opa-envoy-plugin.
# The authz differential test (authz/difftest) and hack/bench/authz/run.sh find it
# on PATH or through $SIGIL_OPA_ENVOY_PLUGIN.
# The module proxy here is a partial mirror: `go install ...@version` fails, so
# the tool is built inside a scratch module that pins the version.
set -euo pipefail

VERSION=v1.10.0-envoy
TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
BIN=$TOOLS/opa-envoy-plugin@$VERSION

if [[ -x $BIN ]] && "$BIN" version 2>/dev/null | grep -q "Version: 1.10.0$"; then
	ln -sfn "opa-envoy-plugin@$VERSION" "$TOOLS/opa-envoy-plugin"
	echo "40-opa-envoy-plugin: cached $BIN"
	exit 0
fi
if ! command -v go >/dev/null; then
	echo "40-opa-envoy-plugin: go is missing; install Go 1.26 and rerun" >&2
	exit 1
fi
mkdir -p "$TOOLS"
echo "40-opa-envoy-plugin: building $VERSION into $TOOLS (1-3 minutes cold)"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH"
cat >go.mod <<MOD
module scratch/opaenvoy

go 1.26

require github.com/open-policy-agent/opa-envoy-plugin $VERSION
MOD
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/open-policy-agent/opa-envoy-plugin/cmd/opa-envoy-plugin"
GO
export GOFLAGS=-mod=mod
GONOSUMDB=github.com/open-policy-agent/opa-envoy-plugin go mod tidy >/dev/null
CGO_ENABLED=0 go build -o "$BIN.tmp" github.com/open-policy-agent/opa-envoy-plugin/cmd/opa-envoy-plugin
mv "$BIN.tmp" "$BIN"
ln -sfn "opa-envoy-plugin@$VERSION" "$TOOLS/opa-envoy-plugin"
echo "40-opa-envoy-plugin: built $BIN"
