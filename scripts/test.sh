#!/usr/bin/env bash
# The test command: installs what the tests need, builds, and runs every test.
# Tests that need root and network namespaces run for real; with CI=true they fail
# (never skip) when something they need is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The VM tests' kernel, modules (netdevsim built out of tree) and initramfs; cached.
./deploy/qemu/prepare.sh >/dev/null
# libvirtd (and virtlogd) for the libvirt tests, started without systemd.
if [ "$(id -u)" -eq 0 ]; then ./scripts/libvirt-up.sh; fi
swift build --build-tests
swift test --skip-build --no-parallel
# The .deb packages: built (release, Swift runtime linked in), lintian-clean, installed on a
# clean Debian 12 root, run, verified and purged. Needs root (debootstrap, chroot).
if [ "$(id -u)" -eq 0 ]; then
  ./scripts/test-packages.sh
elif [ "${CI:-}" = true ]; then
  echo "scripts/test.sh: the packages' test needs root" >&2; exit 1
fi
