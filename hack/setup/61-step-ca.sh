#!/usr/bin/env bash
# step-ca and the step CLI v0.30.2 — the upstream CA of the step_ca tests —
# built from the Go module proxy into $SIGIL_TOOLS (default
# ~/.cache/sigil/tools, outside the checkout) as NAME@VERSION, linked as NAME.
# Built without cgo (with cgo step-ca needs libpcsclite-dev). Minutes cold,
# seconds once cached. Tests find them on PATH or through $SIGIL_STEP_CA.
set -euo pipefail

VERSION=v0.30.2
TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
mkdir -p "$TOOLS"

build() { # name package
	local name=$1 pkg=$2 gobin start
	if [[ -x $TOOLS/$name@$VERSION ]]; then
		ln -sfn "$name@$VERSION" "$TOOLS/$name"
		echo "61-step-ca: cached $TOOLS/$name@$VERSION"
		return
	fi
	if ! command -v go >/dev/null; then
		echo "61-step-ca: go is missing; install Go 1.26 and rerun" >&2
		exit 1
	fi
	echo "61-step-ca: building $name $VERSION into $TOOLS (minutes cold)"
	start=$SECONDS
	gobin=$(mktemp -d)
	GOBIN=$gobin CGO_ENABLED=0 go install "$pkg@$VERSION"
	mv "$gobin/$name" "$TOOLS/$name@$VERSION"
	rm -rf "$gobin"
	ln -sfn "$name@$VERSION" "$TOOLS/$name"
	echo "61-step-ca: built $TOOLS/$name@$VERSION in $((SECONDS - start)) s"
}

build step-ca github.com/smallstep/certificates/cmd/step-ca
build step github.com/smallstep/cli/cmd/step
