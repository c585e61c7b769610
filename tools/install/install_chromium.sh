#!/usr/bin/env bash
# Headless Chromium for the HTML report test (tests/accuracy/test_html.py), from Debian's
# packages. Idempotent: does nothing when a chromium binary is already on PATH.
# Usage: bash tools/install/install_chromium.sh   (as root, or with sudo available)
set -euo pipefail

for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "chromium present: $(command -v "$bin")"
        exit 0
    fi
done

SUDO=''
if [ "$(id -u)" != 0 ]; then
    SUDO='sudo'
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
chromium --version
