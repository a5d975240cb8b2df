#!/usr/bin/env bash
# The packages' test (run by scripts/test.sh as root): builds the .deb files, checks them with
# lintian (no tag but the ones overridden and explained in the package), installs them with
# apt on a clean Debian 12 root made by debootstrap (minbase; no systemd running: a chroot),
# runs `tandem-host --help` and `tandem-agent --help` from there, has `systemd-analyze
# verify` check the installed units against that root, and purges them: nothing of theirs
# may be left.
#
# Usage: scripts/test-packages.sh [--no-build]
# The debootstrapped root is cached in /var/cache/tandem (a tarball) between runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-packages.sh: run as root (debootstrap, chroot)" >&2; exit 1; }
# In a mount namespace of its own with private propagation: the root's /proc, /dev and
# /dev/pts mounts are never seen by (or propagated to) the host's, and they go with the
# namespace whatever ends the script.
if [ -z "${TANDEM_PACKAGES_UNSHARED:-}" ]; then
  exec unshare --mount --propagation private env TANDEM_PACKAGES_UNSHARED=1 "$0" "$@"
fi
build=()
[ "${1:-}" = "--no-build" ] && build=(--no-build)

fail() { echo "test-packages.sh: FAIL: $*" >&2; exit 1; }
step() { echo "test-packages.sh: $*"; }

out=$(mktemp -d)
root=$(mktemp -d /var/tmp/tandem-root.XXXXXX)
cleanup() {
  for m in proc dev/pts dev sys; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$root" "$out"
}
trap cleanup EXIT

step "building the packages"
./scripts/package.sh "${build[@]}" --out "$out" > "$out/package.log" 2>&1 || { cat "$out/package.log"; fail "scripts/package.sh"; }
host_deb=$(ls "$out"/tandem-host_*.deb) agent_deb=$(ls "$out"/tandem-agent_*.deb)
tags=$(grep -E '^[EWIXP]: tandem-' "$out/package.log" || true)
[ -z "$tags" ] || { echo "$tags"; fail "lintian tags (fix them, or override and explain one in scripts/package.sh)"; }
grep -q "0 hints overridden; 1 unused override" "$out/package.log" && fail "an unused lintian override"
step "lintian: clean ($(grep -c '^' <<<"$(dpkg-deb -c "$host_deb")") files in tandem-host, $(grep -c '^' <<<"$(dpkg-deb -c "$agent_deb")") in tandem-agent)"

mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
cache=/var/cache/tandem/bookworm-minbase.tgz
mkdir -p /var/cache/tandem
if [ ! -s "$cache" ]; then
  step "debootstrap: making the clean root's tarball from $mirror (once)"
  debootstrap --variant=minbase --make-tarball="$cache" bookworm "$root/tmp-tarball" "$mirror" > "$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log"; rm -f "$cache"; fail "debootstrap --make-tarball"; }
  rm -rf "$root/tmp-tarball"
fi
step "debootstrap: a clean Debian 12 root in $root"
debootstrap --variant=minbase --unpack-tarball="$cache" bookworm "$root" "$mirror" > "$out/debootstrap.log" 2>&1 \
  || { tail -20 "$out/debootstrap.log"; fail "debootstrap"; }
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
# What any Debian 12 host or guest has beyond minbase and the units rely on: systemd (its
# targets, for systemd-analyze) and procps (/bin/kill, the host unit's reload).
in_root apt-get update -qq > "$out/apt.log" 2>&1 || { tail -20 "$out/apt.log"; fail "apt-get update in the root"; }
in_root apt-get install -y -qq --no-install-recommends systemd procps >> "$out/apt.log" 2>&1 || { tail -20 "$out/apt.log"; fail "apt-get install systemd procps"; }
[ ! -e "$root/usr/bin/tandem-host" ] || fail "the clean root already has tandem-host"
[ ! -e "$root/usr/lib/x86_64-linux-gnu/libnl-3.so.200" ] || fail "the clean root already has libnl"

step "apt-get install ./tandem-host.deb ./tandem-agent.deb (dependencies from $mirror)"
cp "$host_deb" "$agent_deb" "$root/tmp/"
in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$host_deb")" "/tmp/$(basename "$agent_deb")" >> "$out/apt.log" 2>&1 \
  || { tail -30 "$out/apt.log"; fail "apt-get install"; }
for f in /usr/bin/tandem-host /usr/bin/tandem-agent /usr/lib/systemd/system/tandem-host.service /usr/lib/systemd/system/tandem-agent.service \
         /usr/lib/udev/rules.d/99-tandem-agent.rules /etc/tandem/host.toml /usr/share/man/man1/tandem-host.1.gz /usr/share/man/man1/tandem-agent.1.gz \
         /usr/share/bash-completion/completions/tandem-host /usr/share/zsh/vendor-completions/_tandem-agent /usr/share/tandem/prometheus/tandem-rules.yml; do
  [ -e "$root$f" ] || fail "$f not installed"
done
in_root dpkg-query -W -f='${Conffiles}\n' tandem-host | grep -q "/etc/tandem/host.toml" || fail "host.toml is not a conffile"

step "tandem-host --help and tandem-agent --help from the installed packages"
in_root tandem-host --help > "$out/host-help.txt" 2>&1 || { cat "$out/host-help.txt"; fail "tandem-host --help"; }
grep -q "SUBCOMMANDS:" "$out/host-help.txt" && grep -q "check" "$out/host-help.txt" || fail "tandem-host --help: $(head -5 "$out/host-help.txt")"
in_root tandem-agent --help > "$out/agent-help.txt" 2>&1 || { cat "$out/agent-help.txt"; fail "tandem-agent --help"; }
in_root tandem-host run --check --config /etc/tandem/host.toml > "$out/check.txt" 2>&1 || { cat "$out/check.txt"; fail "the shipped host.toml does not parse"; }
in_root tandem-host --version | grep -qx "$(sed -n 's/.*public static let string = "\(.*\)".*/\1/p' Sources/Protocol/Version.swift)" || fail "tandem-host --version"

step "systemd-analyze verify on the installed units"
# (The host's systemd-analyze, pointed at the root and its units; --man=no: the root has no
# man-db. A unit wanted by a device unit names a device the root does not have: that is the
# only other allowance.)
for unit in tandem-host.service tandem-agent.service; do
  if ! systemd-analyze verify --man=no --root="$root" "$root/usr/lib/systemd/system/$unit" > "$out/verify-$unit.log" 2>&1; then
    cat "$out/verify-$unit.log"; fail "systemd-analyze verify $unit"
  fi
  if grep -v -e 'dev-virtio\\x2dports-org.tandem.agent.0.device' "$out/verify-$unit.log" | grep -q .; then
    cat "$out/verify-$unit.log"; fail "systemd-analyze verify $unit says something"
  fi
done

step "dpkg --purge: nothing of theirs left"
in_root dpkg --purge tandem-host tandem-agent > "$out/purge.log" 2>&1 || { cat "$out/purge.log"; fail "dpkg --purge"; }
for f in /usr/bin/tandem-host /usr/bin/tandem-agent /usr/lib/systemd/system/tandem-host.service /usr/lib/udev/rules.d/99-tandem-agent.rules \
         /etc/tandem /usr/share/doc/tandem-host /usr/share/tandem; do
  [ ! -e "$root$f" ] || fail "$f left after purge"
done
in_root dpkg-query -W tandem-host >/dev/null 2>&1 && fail "dpkg still knows tandem-host"
step "PASS: $(basename "$host_deb") and $(basename "$agent_deb") install on a clean Debian 12 root, run, verify, and purge clean"
