#!/usr/bin/env bash
# Installs (or uninstalls) Tandem: binaries, systemd units, udev rule, example configs.
# See deploy/README.md. Run it from anywhere; it finds the repository from its own path.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/install.sh [--prefix DIR] [--destdir DIR] [--guest] [--no-build]
                         [--bindir-from DIR] [--uninstall]

Host (default):  builds release binaries and installs
                   PREFIX/bin/tandem-host, PREFIX/bin/tandem-agent (to copy into guests),
                   /etc/systemd/system/tandem-host.service,
                   /etc/tandem/host.toml.example (never touches /etc/tandem/host.toml),
                   PREFIX/share/tandem/examples/host-sriov.toml, host-tap.toml,
                   PREFIX/share/tandem/libvirt/channel.xml.
--guest:         installs PREFIX/bin/tandem-agent,
                   /etc/systemd/system/tandem-agent.service,
                   /etc/udev/rules.d/99-tandem-agent.rules.
Both:            PREFIX/share/doc/tandem/README.md, and this script as
                   PREFIX/share/tandem/install.sh (for --uninstall).

  --prefix DIR       installation prefix (default /usr/local); the units' ExecStart follows it
  --destdir DIR      stage everything under DIR (a package root or a test); no systemctl/udevadm
  --guest            the guest's files instead of the host's
  --no-build         use binaries already built in .build/release (no swift needed)
  --bindir-from DIR  use the binaries in DIR (implies --no-build): e.g. a tandem-agent
                     copied into a guest that has no Swift toolchain
  --uninstall        remove exactly what an install with the same --prefix/--destdir put there
                     (listed in PREFIX/share/tandem/installed-files)
  -h, --help         this text

Building runs `swift build -c release --static-swift-stdlib`: the binaries then need only
glibc 2.35 or later, libstdc++ and libnl-3 / libnl-route-3 / libnl-genl-3, and for the host
libvirt (Debian: libnl-3-200 libnl-route-3-200 libnl-genl-3-200, libvirt0).
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

prefix=/usr/local
destdir=
guest=0
build=1
bindir_from=
uninstall=0

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --guest) guest=1; shift ;;
    --no-build) build=0; shift ;;
    --bindir-from) [ $# -ge 2 ] || die "--bindir-from needs a directory"; bindir_from=$2; build=0; shift 2 ;;
    --bindir-from=*) bindir_from=${1#*=}; build=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

case "$prefix" in
  /*) ;;
  *) die "--prefix must be an absolute path, not '$prefix'" ;;
esac
# p: the prefix without a trailing slash ("" for /), so that "$p/bin" is always right.
p=${prefix%/}
if [ -n "$destdir" ]; then
  mkdir -p -- "$destdir" || die "cannot create --destdir $destdir"
  destdir=$(cd -- "$destdir" && pwd) || die "cannot enter --destdir $destdir"
  [ "$destdir" != / ] || destdir=
fi

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/.." && pwd)
manifest_rel=$p/share/tandem/installed-files
manifest=$destdir$manifest_rel

# Act on the live system (systemctl, udevadm) only without --destdir, with systemd running.
live=0
if [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then live=1; fi

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  die "installing into / needs root: run it with sudo, or stage with --destdir DIR"
fi

# ---------------------------------------------------------------------------------------
# Uninstall: remove the files in the manifest, then the directories install created (when
# they are empty: a host.toml you wrote keeps /etc/tandem), then the manifest.
# ---------------------------------------------------------------------------------------
if [ "$uninstall" -eq 1 ]; then
  [ -f "$manifest" ] || die "no manifest at $manifest: nothing was installed with --prefix $prefix${destdir:+ --destdir $destdir}"
  entries=$(cat -- "$manifest") || die "cannot read $manifest"
  if [ "$live" -eq 1 ]; then
    for unit in tandem-host.service tandem-agent.service; do
      if printf '%s\n' "$entries" | grep -qx "f /etc/systemd/system/$unit"; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
        say "stopped and disabled $unit"
      fi
    done
  fi
  while IFS= read -r line; do
    case "$line" in
      "f "*)
        path=${line#f }
        if [ -e "$destdir$path" ] || [ -L "$destdir$path" ]; then
          rm -f -- "$destdir$path" || die "cannot remove $destdir$path"
          say "removed $destdir$path"
        fi ;;
    esac
  done <<< "$entries"
  rm -f -- "$manifest" || die "cannot remove $manifest"
  say "removed $manifest"
  # Directories install created, deepest first (the manifest lists parents first). One
  # that holds something else (your /etc/tandem/host.toml) is kept.
  while IFS= read -r line; do
    case "$line" in
      "d "*)
        path=${line#d }
        [ -d "$destdir$path" ] || continue
        if rmdir -- "$destdir$path" 2>/dev/null; then
          say "removed $destdir$path/"
        else
          say "kept $destdir$path/ (not empty)"
        fi ;;
    esac
  done < <(printf '%s\n' "$entries" | awk '{ a[NR] = $0 } END { for (i = NR; i > 0; i--) print a[i] }')
  if [ "$live" -eq 1 ]; then
    systemctl daemon-reload || true
    if command -v udevadm >/dev/null 2>&1; then udevadm control --reload >/dev/null 2>&1 || true; fi
  fi
  say "uninstalled"
  exit 0
fi

# ---------------------------------------------------------------------------------------
# The binaries.
# ---------------------------------------------------------------------------------------
if [ "$guest" -eq 1 ]; then bins=(tandem-agent); else bins=(tandem-host tandem-agent); fi

if [ -n "$bindir_from" ]; then
  [ -d "$bindir_from" ] || die "--bindir-from $bindir_from is not a directory"
  bindir=$(cd -- "$bindir_from" && pwd)
elif [ "$build" -eq 1 ]; then
  command -v swift >/dev/null 2>&1 || die "no swift on PATH: install Swift 6.1 or later, or use --no-build / --bindir-from DIR with binaries built elsewhere"
  say "building: swift build -c release --static-swift-stdlib (in $repo)"
  (cd -- "$repo" && swift build -c release --static-swift-stdlib) || die "swift build failed (see above)"
  bindir=$(cd -- "$repo" && swift build -c release --static-swift-stdlib --show-bin-path) || die "swift build --show-bin-path failed"
else
  bindir=$repo/.build/release
fi
for b in "${bins[@]}"; do
  { [ -f "$bindir/$b" ] && [ -x "$bindir/$b" ]; } || die "no executable $bindir/$b (build it with: swift build -c release --static-swift-stdlib, or drop --no-build)"
done
# A guest has no Swift runtime: say so if the agent was not linked with it.
if command -v ldd >/dev/null 2>&1 && ldd "$bindir/tandem-agent" 2>/dev/null | grep -q 'libswiftCore'; then
  say "warning: $bindir/tandem-agent links the Swift runtime dynamically; a guest without Swift cannot run it (build with --static-swift-stdlib, as this script does)"
fi

for f in systemd/tandem-host.service systemd/tandem-agent.service udev/99-tandem-agent.rules \
         examples/host-sriov.toml examples/host-tap.toml libvirt/channel.xml README.md; do
  [ -f "$here/$f" ] || die "missing $here/$f: run the script from a complete checkout (or copy all of deploy/)"
done

# ---------------------------------------------------------------------------------------
# Install. Every file goes into the manifest as "f PATH", every directory this run creates
# as "d PATH", paths without DESTDIR. An existing manifest (an earlier install, e.g. of
# the other role, or of an older version) is kept and added to.
# ---------------------------------------------------------------------------------------
files=()
newdirs=()

mkdirs() { # DIR (without DESTDIR): create it and its missing parents, remembering which
  local d=$1 missing=()
  while [ "$d" != / ] && [ ! -d "$destdir$d" ]; do missing=("$d" "${missing[@]}"); d=$(dirname -- "$d"); done
  local m
  for m in "${missing[@]}"; do
    mkdir -m 0755 -- "$destdir$m" || die "cannot create $destdir$m"
    newdirs+=("$m")
  done
}

put() { # MODE SRC DEST (without DESTDIR) [sed expression]
  local mode=$1 src=$2 dst=$3
  mkdirs "$(dirname -- "$dst")"
  if [ $# -ge 4 ]; then
    local tmp
    tmp=$(mktemp "$destdir$(dirname -- "$dst")/.tandem-install.XXXXXX") || die "cannot write in $destdir$(dirname -- "$dst")"
    sed -e "$4" -- "$src" > "$tmp" || { rm -f -- "$tmp"; die "cannot write $tmp"; }
    if ! { chmod "$mode" -- "$tmp" && mv -f -- "$tmp" "$destdir$dst"; }; then
      rm -f -- "$tmp"
      die "cannot install $destdir$dst"
    fi
  else
    install -m "$mode" -- "$src" "$destdir$dst" || die "cannot install $destdir$dst"
  fi
  files+=("$dst")
  say "installed $destdir$dst"
}

# The units name /usr/local; follow --prefix.
relocate="s#/usr/local/#$p/#g"

for b in "${bins[@]}"; do put 0755 "$bindir/$b" "$p/bin/$b"; done
put 0644 "$here/README.md" "$p/share/doc/tandem/README.md"
# This script, for the uninstall (which needs nothing else from deploy/).
put 0755 "$here/install.sh" "$p/share/tandem/install.sh"
if [ "$guest" -eq 1 ]; then
  put 0644 "$here/systemd/tandem-agent.service" /etc/systemd/system/tandem-agent.service "$relocate"
  put 0644 "$here/udev/99-tandem-agent.rules" /etc/udev/rules.d/99-tandem-agent.rules
else
  put 0644 "$here/systemd/tandem-host.service" /etc/systemd/system/tandem-host.service "$relocate"
  put 0644 "$here/examples/host-sriov.toml" "$p/share/tandem/examples/host-sriov.toml"
  put 0644 "$here/examples/host-tap.toml" "$p/share/tandem/examples/host-tap.toml"
  put 0644 "$here/libvirt/channel.xml" "$p/share/tandem/libvirt/channel.xml"
  # Only the .example: /etc/tandem/host.toml is yours and is never written.
  put 0644 "$here/examples/host-sriov.toml" /etc/tandem/host.toml.example
fi

mkdirs "$(dirname -- "$manifest_rel")"
# Directories first ("d", parents before children), then files ("f"); entries of an
# earlier install are kept, each entry once.
{
  if [ -f "$manifest" ]; then grep '^d ' -- "$manifest" || true; fi
  for d in "${newdirs[@]}"; do echo "d $d"; done
  if [ -f "$manifest" ]; then grep '^f ' -- "$manifest" || true; fi
  for f in "${files[@]}"; do echo "f $f"; done
} | awk '!seen[$0]++' > "$manifest.tmp" || die "cannot write $manifest.tmp"
mv -f -- "$manifest.tmp" "$manifest" || die "cannot write $manifest"
uninstall_cmd="$p/share/tandem/install.sh --uninstall${destdir:+ --destdir $destdir}"
[ "$prefix" = /usr/local ] || uninstall_cmd+=" --prefix $prefix"
say "recorded what it installed in $manifest (to remove it: $uninstall_cmd)"

if [ "$live" -eq 1 ]; then
  systemctl daemon-reload
  say "ran systemctl daemon-reload"
  for unit in tandem-host.service tandem-agent.service; do
    if systemctl is-active --quiet "$unit"; then say "$unit is running the old binary: systemctl restart $unit"; fi
  done
  if [ "$guest" -eq 1 ] && command -v udevadm >/dev/null 2>&1; then
    # Re-run the rules on present ports, so that the port's device unit exists now.
    udevadm control --reload || true
    udevadm trigger --subsystem-match=virtio-ports --action=change || true
    udevadm settle --timeout=10 || true
    say "reloaded udev rules; tandem-agent starts whenever /dev/virtio-ports/org.tandem.agent.0 appears"
  fi
  if [ "$guest" -eq 1 ] && [ -e /dev/virtio-ports/org.tandem.agent.0 ]; then
    if systemctl start tandem-agent.service; then
      say "started tandem-agent.service (the port is there)"
    else
      say "warning: tandem-agent.service did not start: see systemctl status tandem-agent"
    fi
  fi
fi

if [ "$guest" -eq 1 ]; then
  say "next: the agent shapes the default route's interface; to name another, set it in /etc/default/tandem-agent"
  say "      (TANDEM_AGENT_ARGS=\"--interface enp1s0\"), then: systemctl status tandem-agent"
else
  if [ -e "$destdir/etc/tandem/host.toml" ]; then
    say "kept your $destdir/etc/tandem/host.toml"
  else
    say "next: write /etc/tandem/host.toml (start from /etc/tandem/host.toml.example or"
    say "      $p/share/tandem/examples/), check it with: $p/bin/tandem-host run --check,"
    say "      then: systemctl enable --now tandem-host"
  fi
fi
