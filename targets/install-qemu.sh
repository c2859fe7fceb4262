#!/usr/bin/env bash
# Installs qemu-system-arm and qemu-system-riscv32 (QEMU 10.0 from bookworm-backports) if missing.
# Idempotent. Uses a private apt source list (the machine's Debian sources plus the backports
# suite) so the system's apt configuration is left untouched. Plain `apt-get install
# qemu-system-arm` fails on bookworm here because of a backports qemu-utils conflict.
set -euo pipefail
if command -v qemu-system-arm >/dev/null && command -v qemu-system-riscv32 >/dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
D="${TMPDIR:-/tmp}/flowrt-apt-bpo"
mkdir -p "$D/lists/partial" "$D/archives/partial" "$D/parts"
sed -E 's/^Suites: bookworm bookworm-updates$/Suites: bookworm bookworm-updates bookworm-backports/' \
    /etc/apt/sources.list.d/debian.sources >"$D/parts/debian.sources"
O=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$D/parts"
   -o "Dir::State::lists=$D/lists" -o "Dir::Cache::archives=$D/archives")
$SUDO apt-get "${O[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${O[@]}" install -y -qq --no-install-recommends \
    -t bookworm-backports qemu-system-arm qemu-system-misc
command -v qemu-system-arm >/dev/null && command -v qemu-system-riscv32 >/dev/null
