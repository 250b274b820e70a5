#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's packages for the alert-rule and dashboard tests.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "promtool and prometheus are missing: install Debian's 'prometheus' package" \
         "(sudo apt-get install prometheus) and run make test again" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a system service; the tests start their own Prometheus on loopback.
(service prometheus stop || systemctl stop prometheus || pkill -x prometheus) >/dev/null 2>&1 || true
