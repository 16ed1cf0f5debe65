#!/usr/bin/env bash
# The browser test (tests/serve/test_serve_browser.py) drives a system Chromium through Playwright; no browser is
# downloaded by a test tool. Install the distribution's Chromium when it is missing and we may (root, or sudo
# without a password); otherwise stop with one line saying what to run. SRKIT_CHROMIUM names another binary.
set -euo pipefail
CHROMIUM="${SRKIT_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ -n "${SRKIT_CHROMIUM:-}" ]; then
    echo "SRKIT_CHROMIUM=$CHROMIUM is not an executable file; point it at a Chromium binary" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is missing at $CHROMIUM and this system has no apt-get: install Chromium, then set SRKIT_CHROMIUM=/path/to/chromium" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "Chromium is missing at $CHROMIUM: run 'sudo apt-get install -y chromium' (or set SRKIT_CHROMIUM), then make test again" >&2
    exit 1
fi
echo "installing Chromium from the distribution (apt-get install chromium) for the browser test..." >&2
$SUDO apt-get update -q >/dev/null
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "apt-get installed chromium, but $CHROMIUM is still missing" >&2; exit 1; }
