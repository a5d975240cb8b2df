#!/usr/bin/env bash
# Builds Debian packages of Tandem with dpkg-deb: dist/tandem-host_VERSION_ARCH.deb (the host
# controller, its unit, host.toml as a conffile, the Prometheus rules, examples) and
# dist/tandem-agent_VERSION_ARCH.deb (the guest agent, its unit and udev rule). Each has its
# man page and bash/zsh completions, generated from the argument parser.
#
# The binaries are release builds with the Swift runtime linked in (--static-swift-stdlib):
# Debian 12 has no Swift runtime package. They need glibc 2.35 or later (Debian 12 has 2.36;
# dpkg-shlibdeps says so in Depends)
# and libnl-3 (both), libvirt (the host). Kernels: the guest's needs HTB and u32 (and 4.2 or
# later for sock_diag's destroy groups; without them a flow's end is seen at the next socket
# sample); the host's, VF rates through rtnetlink (any with SR-IOV), the devlink backend's rate
# objects 5.14 or later (tx_weight 6.2), the tc backend IFB, HTB, u32 and mirred.
#
# Usage: scripts/package.sh [--no-build] [--out DIR]   (as root or not; lintian runs if present)
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument '$1' (--no-build, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

version=$(sed -n 's/.*public static let string = "\(.*\)".*/\1/p' Sources/Protocol/Version.swift)
[ -n "$version" ] || { echo "package.sh: no version in Sources/Protocol/Version.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)
maintainer="Tandem developers <tandem@lists.example.org>"

if [ "$build" -eq 1 ]; then
  for p in tandem-host tandem-agent; do swift build -c release --static-swift-stdlib --product "$p"; done
  swift build --product generate-manual
fi
bin=.build/release
manual=$(find .build -path '*debug/generate-manual' -type f -perm -u+x | head -1)
[ -x "$bin/tandem-host" ] && [ -x "$bin/tandem-agent" ] || { echo "package.sh: no release binaries in $bin (run without --no-build)" >&2; exit 1; }
[ -n "$manual" ] || { echo "package.sh: no generate-manual tool (swift build --product generate-manual)" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

# The Debian changelog of a native package, and the copyright file lintian asks for.
changelog() {
  printf '%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$1" "$version" "$version" "$maintainer" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
}
copyright() {
  cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tandem
Source: https://github.com/tandem-qos/tandem

Files: *
Copyright: 2026 Tandem developers
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text of the Apache License version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
}

# The shared libraries a binary needs, as Debian package dependencies (dpkg-shlibdeps).
depends() {
  local dir
  dir=$(mktemp -d)
  mkdir -p "$dir/debian"
  printf 'Source: tandem\n\nPackage: tandem\nArchitecture: any\n' > "$dir/debian/control"
  cp "$1" "$dir/bin"
  local deps
  deps=$(cd "$dir" && dpkg-shlibdeps -O -e bin 2>"$dir/err" | sed -n 's/^shlibs:Depends=//p')
  [ -n "$deps" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies for $1: $(cat "$dir/err")" >&2; rm -rf "$dir"; return 1; }
  rm -rf "$dir"
  echo "$deps"
}

# One package: NAME, its binary, the rest of its files already under $stage/NAME, its
# description in $stage/NAME.description (the synopsis, then the extended lines).
package() {
  local name=$1 root=$stage/$1
  install -D -m 0755 "$bin/$name" "$root/usr/bin/$name"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/$name"
  mkdir -p "$stage/man-$name"
  "$manual" "$bin/$name" --output-directory "$stage/man-$name" --date "$(date -u +%Y-%m-%d -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")" \
    --authors "Tandem developers" >/dev/null
  install -d "$root/usr/share/man/man1"
  gzip -9n -c "$stage/man-$name/$name.1" > "$root/usr/share/man/man1/$name.1.gz"
  install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions"
  # (A completion is sourced, not run: no #! line.)
  "$bin/$name" --generate-completion-script bash | sed '1{/^#!/d}' > "$root/usr/share/bash-completion/completions/$name"
  "$bin/$name" --generate-completion-script zsh > "$root/usr/share/zsh/vendor-completions/_$name"
  install -d "$root/usr/share/doc/$name"
  copyright > "$root/usr/share/doc/$name/copyright"
  changelog "$name" | gzip -9n > "$root/usr/share/doc/$name/changelog.gz"
  # Units from deploy/systemd, for the package's paths.
  install -d "$root/usr/lib/systemd/system"
  sed -e "s|/usr/local/bin/|/usr/bin/|g" \
      -e "s|^Documentation=.*|Documentation=man:$name(1) file:/usr/share/doc/$name/README.md|" \
      "deploy/systemd/$name.service" > "$root/usr/lib/systemd/system/$name.service"
  install -m 0644 README.md "$root/usr/share/doc/$name/README.md"
  chmod -R u+rwX,go+rX,go-w "$root"
  local size deps
  size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
  deps=$(depends "$bin/$name")
  install -d "$root/DEBIAN"
  cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $deps
Section: net
Priority: optional
Homepage: https://github.com/tandem-qos/tandem
Description: $(head -1 "$stage/$name.description")
EOF
  tail -n +2 "$stage/$name.description" >> "$root/DEBIAN/control"
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
}

# tandem-host: host.toml as a conffile (the libvirt example: edit the links), the rules,
# examples. Not started on install: it needs /etc/tandem/host.toml to name this host's links.
h=$stage/tandem-host
install -D -m 0644 deploy/examples/host-libvirt.toml "$h/etc/tandem/host.toml"
install -D -m 0644 deploy/prometheus/tandem-rules.yml "$h/usr/share/tandem/prometheus/tandem-rules.yml"
for f in deploy/examples/*.toml; do install -D -m 0644 "$f" "$h/usr/share/doc/tandem-host/examples/$(basename "$f")"; done
for f in deploy/libvirt/*; do [ -f "$f" ] && install -D -m 0644 "$f" "$h/usr/share/tandem/libvirt/$(basename "$f")"; done
install -D -m 0644 docs/METRICS.md "$h/usr/share/doc/tandem-host/METRICS.md"
install -D -m 0644 docs/CONFIG.md "$h/usr/share/doc/tandem-host/CONFIG.md"
install -d "$h/DEBIAN"
echo /etc/tandem/host.toml > "$h/DEBIAN/conffiles"
cat > "$h/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  if [ -z "$2" ]; then
    echo "tandem-host: edit /etc/tandem/host.toml (tandem-host check --config /etc/tandem/host.toml), then: systemctl enable --now tandem-host"
  else
    # An upgrade: a running controller restarts on the new binary (limits stay in force meanwhile).
    deb-systemd-invoke try-restart tandem-host.service || true
  fi
fi
EOF
cat > "$h/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Removed: the controller stops (the limits it set stay in the kernel).
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then deb-systemd-invoke stop tandem-host.service || true; fi
EOF
cat > "$h/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
# purge: the state tandem-host kept (runtime policies, reservations).
if [ "$1" = purge ]; then rm -rf /var/lib/tandem; rmdir /etc/tandem 2>/dev/null || true; fi
EOF
chmod 0755 "$h/DEBIAN/postinst" "$h/DEBIAN/prerm" "$h/DEBIAN/postrm"
cat > "$stage/tandem-host.description" <<'EOF'
fair shares of a shared link for KVM guests (host controller)
 Tandem gives every VM its fair share of the wire: weighted max-min with
 guarantees and caps, work conserving, enforced as SR-IOV VF TX limits
 (rtnetlink or devlink rate) or with tc on the host for tap VMs. It takes
 demand reports from tandem-agent in each guest over a virtio-serial port,
 follows libvirt's domains, and serves Prometheus metrics and a fairness page.
EOF
package tandem-host >/dev/null

# tandem-agent: the udev rule starts it when the port appears.
a=$stage/tandem-agent
install -D -m 0644 deploy/udev/99-tandem-agent.rules "$a/usr/lib/udev/rules.d/99-tandem-agent.rules"
# The one lintian tag left, on purpose: the unit is wanted by the virtio port's device unit
# (so udev starts it when the port appears and stops it when it goes), not by a target.
install -d "$a/usr/share/lintian/overrides"
cat > "$a/usr/share/lintian/overrides/tandem-agent" <<'EOF'
# WantedBy= the virtio-serial port's device unit: started when the port appears, as
# qemu-guest-agent is; there is no target that means "this VM has Tandem's channel".
tandem-agent: systemd-service-file-refers-to-unusual-wantedby-target dev-virtiox2dports-org.tandem.agent.0.device [usr/lib/systemd/system/tandem-agent.service]
EOF
install -d "$a/DEBIAN"
cat > "$a/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
  # A guest whose port is already there starts the agent now; an upgrade restarts it.
  if [ -d /run/udev ]; then
    udevadm control --reload-rules || true
    udevadm trigger --subsystem-match=virtio-ports --action=add || true
  fi
  if [ -n "$2" ] && [ -d /run/systemd/system ]; then deb-systemd-invoke try-restart tandem-agent.service || true; fi
fi
EOF
cat > "$a/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Removed: the agent stops and takes its shaping off the interface.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then deb-systemd-invoke stop tandem-agent.service || true; fi
EOF
cat > "$a/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ -d /run/udev ]; then udevadm control --reload-rules || true; fi
EOF
chmod 0755 "$a/DEBIAN/postinst" "$a/DEBIAN/prerm" "$a/DEBIAN/postrm"
cat > "$stage/tandem-agent.description" <<'EOF'
fair shares of a shared link for KVM guests (guest agent)
 Runs inside a VM: measures per-flow demand and reports it to tandem-host over
 a virtio-serial port, shapes the VM's own traffic with HTB so that its flows
 share fairly (TCP is not starved by UDP), and serves applications'
 bandwidth reservations on a unix socket. Started by udev when the port appears.
EOF
package tandem-agent >/dev/null

ls -1 "$out"/tandem-host_"$version"_"$arch".deb "$out"/tandem-agent_"$version"_"$arch".deb
if command -v lintian >/dev/null; then
  lintian --no-tag-display-limit "$out"/tandem-host_"$version"_"$arch".deb "$out"/tandem-agent_"$version"_"$arch".deb || true
fi
