#!/usr/bin/env bash
# Makes sure h2load (nghttp2's HTTP/2 load generator, Debian package
# nghttp2-client) is installed, for the saturation runs of
# hack/bench/authz/run.sh: written in C, it costs the client core a
# fraction of what a Go gRPC client does per call, as Envoy would, so the
# server under test and not the generator bounds decisions/s. On Debian as
# root it installs the package with apt-get; elsewhere it says what is
# missing and exits 1.
set -euo pipefail

if command -v h2load >/dev/null 2>&1; then
	echo "42-h2load: $(h2load --version 2>&1 | head -1) present"
	exit 0
fi
if [[ -f /etc/debian_version && $(id -u) -eq 0 ]]; then
	echo "42-h2load: installing nghttp2-client"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends nghttp2-client >/dev/null; then
		apt-get update >/dev/null
		apt-get install -y --no-install-recommends nghttp2-client >/dev/null
	fi
	echo "42-h2load: $(h2load --version 2>&1 | head -1) installed"
	exit 0
fi
echo "42-h2load: h2load is missing: install nghttp2-client (Debian/Ubuntu: apt-get install nghttp2-client)" >&2
exit 1
