#!/usr/bin/env bash
# Installs what Tandem needs to build, test and run its lab on Debian 12, as root.
# Idempotent: packages already there are left alone.
set -euo pipefail

packages=(
  libnl-3-dev libnl-route-3-dev libnl-genl-3-dev pkg-config   # CNetlink builds against libnl through pkg-config
  iproute2                                     # ip and tc: namespaces, veth, the tests' oracle
  iperf3                                       # traffic in the tests and the lab
  iputils-ping                                 # counters move in the link tests
  systemd libxml2-utils                        # deploy tests: systemd-analyze verify, xmllint
  python3                                      # the unprivileged-user socket test, the overhead benchmark
  libvirt-dev                                  # CLibvirt builds against libvirt through pkg-config
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients  # the libvirt tests: libvirtd, virsh
  chromium                                     # the fairness page's test: a real browser, headless
  prometheus                                   # the metrics tests: a real server scrapes tandem-host; promtool checks rules and output
  dpkg-dev binutils lintian debootstrap        # the packages: dpkg-shlibdeps, strip, lintian; their install test on a clean root
)

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh: run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v swift >/dev/null || { echo "scripts/setup.sh: no swift on PATH (Swift 6.2 or later is needed)" >&2; exit 1; }
