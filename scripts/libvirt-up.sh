#!/usr/bin/env bash
# Starts libvirtd (and virtlogd, which it needs to start QEMU domains) without systemd, for
# the libvirt tests and benchmarks, and waits until it answers. Idempotent: a running daemon
# is left alone. Run as root after scripts/setup.sh.
set -euo pipefail
say() { echo "libvirt-up: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root"; exit 1; }
command -v libvirtd >/dev/null || { say "no libvirtd: run scripts/setup.sh"; exit 1; }

# udev gives /dev/kvm to group kvm (mode 0660) on a real host; where no udev ran, libvirt
# probes QEMU with KVM (as root) and then finds KVM unusable for its qemu user, judges its
# capability cache outdated and probes again at every domain start (a minute each).
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

pgrep -x virtlogd >/dev/null || virtlogd -d
# A libvirtd still shutting down holds its pid file and the new one exits at once: start it
# again until one runs.
# The pid of a libvirtd started here goes to $MINE: the tests restart only that one.
MINE=/run/tandem-test-libvirtd.pid
for _ in $(seq 1 200); do
  if ! pgrep -x libvirtd >/dev/null; then
    libvirtd -d || true
    pgrep -x libvirtd > "$MINE" || rm -f "$MINE"
  fi
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.1
done
say "libvirtd did not answer on qemu:///system within 20s"
exit 1
