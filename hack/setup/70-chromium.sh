#!/usr/bin/env bash
# A real headless browser for the web console test (console/chromium_test.go):
# Debian's chromium package, driven by chromedp.
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null; then
    echo "70-chromium: $b present ($(command -v "$b"))"
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "70-chromium: installing Debian's chromium (apt-get install -y chromium)"
  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  echo "70-chromium: $(chromium --version 2>/dev/null || echo 'chromium installed')"
  exit 0
fi
echo "70-chromium: chromium is missing — install it as root on Debian: apt-get update && apt-get install -y chromium" >&2
exit 1
