#!/usr/bin/env bash
# Base tools the tests call: openssl (verifies SVIDs independently of Go) and
# a C compiler (the PKCS#11 key manager uses cgo).
set -euo pipefail
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v gcc >/dev/null || missing+=(gcc)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq "${missing[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
  exit 0
fi
echo "missing: ${missing[*]} — install them with your package manager (Debian: apt-get install ${missing[*]})" >&2
exit 1
