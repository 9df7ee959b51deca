#!/usr/bin/env bash
# Debian packages the test suite uses: a headless browser to look at the HTML report, the
# CNCF distribution registry to pull images from, and Podman (its Docker-compatible API).
# Installs what is missing when it can (root and apt); otherwise says what the tests will skip.
set -euo pipefail

packages=(chromium fonts-dejavu-core docker-registry podman netavark)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "tests: not installing ${missing[*]} (needs root and apt-get); the tests that need them will skip" >&2
    exit 0
fi
echo "tests: installing ${missing[*]} from Debian's archive"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
