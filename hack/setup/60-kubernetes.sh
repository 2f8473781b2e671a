#!/usr/bin/env bash
# A real Kubernetes control plane for the k8s tests: etcd (Debian's
# etcd-server) plus kube-apiserver and kubectl v1.37.2 built from the Go module
# proxy into $SIGIL_TOOLS (default ~/.cache/sigil/tools, outside the checkout)
# as NAME@VERSION, linked as NAME. No package ships kube-apiserver; the build
# is ~4-9 minutes cold on 2 cores (2.8 GB peak), seconds once cached.
# Tests find the binaries on PATH or through $SIGIL_KUBE_APISERVER,
# $SIGIL_KUBECTL and $SIGIL_ETCD.
set -euo pipefail

VERSION=v1.37.2
STAGING=v0.37.2
TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
mkdir -p "$TOOLS"

if ! command -v etcd >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "60-kubernetes: installing etcd-server (apt-get)"
		apt-get install -y -qq etcd-server >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; }
		# The package starts a system etcd on the fixed ports; the tests run
		# their own on ports they pick, so the system one is not wanted.
		systemctl disable --now etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true
	else
		echo "60-kubernetes: etcd is missing — install it (Debian: apt-get install etcd-server)" >&2
		exit 1
	fi
fi

want() { [[ -x $TOOLS/$1@$VERSION ]] || return 0; ln -sfn "$1@$VERSION" "$TOOLS/$1"; echo "60-kubernetes: cached $TOOLS/$1@$VERSION"; return 1; }
need=()
want kube-apiserver && need+=(kube-apiserver)
want kubectl && need+=(kubectl)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v go >/dev/null; then
	echo "60-kubernetes: go is missing; install Go 1.26 and rerun" >&2
	exit 1
fi
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH"
echo "60-kubernetes: resolving k8s.io/kubernetes@$VERSION"
KMOD=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
	echo "module scratch/kube"
	echo
	echo "go 1.26"
	echo
	echo "require k8s.io/kubernetes $VERSION"
	echo
	# kubernetes replaces each staging module with a directory of its own
	# repository; here each is the published module of the same release.
	sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$KMOD" | grep -v '^k8s.io/sample-' |
		while read -r m; do echo "replace $m => $m $STAGING"; done
} >go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
export GOFLAGS=-mod=mod
GONOSUMDB=k8s.io go mod tidy >/dev/null 2>&1 || GONOSUMDB=k8s.io go mod tidy
LDFLAGS="-X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
for t in "${need[@]}"; do
	echo "60-kubernetes: building $t $VERSION into $TOOLS (minutes cold)"
	start=$SECONDS
	CGO_ENABLED=0 go build -ldflags "$LDFLAGS" -o "$TOOLS/$t@$VERSION.tmp" "k8s.io/kubernetes/cmd/$t"
	mv "$TOOLS/$t@$VERSION.tmp" "$TOOLS/$t@$VERSION"
	ln -sfn "$t@$VERSION" "$TOOLS/$t"
	echo "60-kubernetes: built $TOOLS/$t@$VERSION in $((SECONDS - start)) s"
done
