#!/usr/bin/env bash
# Makes sure SoftHSM2 (the PKCS#11 token that ca/keys tests sign with) and
# OpenSC's pkcs11-tool are installed. On Debian as root it installs the
# missing packages with apt-get; elsewhere it says what is missing and exits 1.
#
# Tests find the module at /usr/lib/softhsm/libsofthsm2.so (Debian's path)
# or wherever SIGIL_SOFTHSM_MODULE points, and softhsm2-util on PATH.
set -euo pipefail

module_found() {
	if [[ -n "${SIGIL_SOFTHSM_MODULE:-}" ]]; then
		[[ -f "$SIGIL_SOFTHSM_MODULE" ]]
		return
	fi
	local p
	for p in /usr/lib/softhsm/libsofthsm2.so \
		/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
		/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
		[[ -f "$p" ]] && return 0
	done
	return 1
}

missing=()
if ! command -v softhsm2-util >/dev/null 2>&1 || ! module_found; then
	missing+=(softhsm2)
fi
if ! command -v pkcs11-tool >/dev/null 2>&1; then
	missing+=(opensc)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "30-softhsm: softhsm2 and opensc present"
	exit 0
fi

if [[ -f /etc/debian_version && $(id -u) -eq 0 ]]; then
	echo "30-softhsm: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
		apt-get update -qq
		apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
	fi
	if ! command -v softhsm2-util >/dev/null 2>&1 || ! module_found; then
		echo "30-softhsm: softhsm2 installed but its module was not found; set SIGIL_SOFTHSM_MODULE" >&2
		exit 1
	fi
	exit 0
fi

echo "30-softhsm: missing Debian packages: ${missing[*]}" >&2
echo "  install them (apt-get install ${missing[*]}) or, for another system, install SoftHSM2 and" >&2
echo "  set SIGIL_SOFTHSM_MODULE to the path of libsofthsm2.so" >&2
exit 1
