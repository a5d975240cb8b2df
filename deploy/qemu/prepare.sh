#!/usr/bin/env bash
# Prepares what the VM tests boot: Debian 12's 6.1 kernel and modules, netdevsim built out of
# tree from the matching linux-source, and a busybox initramfs. Everything lands in a cache
# (TANDEM_VM_CACHE, default /var/cache/tandem-vm) keyed by the kernel version, and a second
# run with the cache in place does nothing.
#
# The kernel is pinned to one ABI (KABI below). If Debian's mirror has moved past it, the newest
# 6.1 ABI whose image, headers and source share a version is taken instead, and said so.
set -euo pipefail

KABI="${TANDEM_VM_KABI:-6.1.0-56-amd64}"
CACHE="${TANDEM_VM_CACHE:-/var/cache/tandem-vm}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive

say() { echo "prepare-vm: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root (apt-get, depmod)"; exit 1; }

have_pkg() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
available() { local out; out=$(apt-cache policy "$1" 2>/dev/null); [[ "$out" == *"Candidate: "[0-9]* ]]; }

if ! available "linux-image-$KABI" || ! available "linux-headers-$KABI"; then
  apt-get update -qq
fi
if ! available "linux-image-$KABI" || ! available "linux-headers-$KABI"; then
  src=$(apt-cache policy linux-source-6.1 | awk '/Candidate/ {print $2}')
  KABI=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sed 's/linux-image-//' | sort -V | while read -r k; do
           [ "$(apt-cache policy "linux-image-$k" | awk '/Candidate/ {print $2}')" = "$src" ] && echo "$k"; done | tail -1)
  [ -n "$KABI" ] || { say "no 6.1 kernel whose image matches linux-source-6.1 $src"; exit 1; }
  say "pinned ABI not available; using $KABI"
fi
DIR="$CACHE/$KABI"
if [ -f "$DIR/ready" ]; then echo "$DIR"; exit 0; fi
mkdir -p "$DIR"

pkgs=(qemu-system-x86 busybox-static "linux-headers-$KABI" linux-source-6.1 kmod cpio)
missing=(); for p in "${pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel and its modules, unpacked (not installed).
if [ ! -d "$DIR/root/lib/modules/$KABI" ]; then
  say "fetching linux-image-$KABI"
  (cd "$DIR" && apt-get download -q "linux-image-$KABI" >/dev/null 2>&1)
  dpkg-deb -x "$DIR"/linux-image-"$KABI"_*.deb "$DIR/root"
  rm -f "$DIR"/linux-image-"$KABI"_*.deb
fi

# netdevsim, which Debian does not build, out of tree from the matching source.
if [ ! -f "$DIR/root/lib/modules/$KABI/extra/netdevsim.ko" ]; then
  say "building netdevsim"
  rm -rf "$DIR/build"; mkdir -p "$DIR/build"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$DIR/build" --wildcards 'linux-source-6.1/drivers/net/netdevsim/*'
  make -s -C "/usr/src/linux-headers-$KABI" M="$DIR/build/linux-source-6.1/drivers/net/netdevsim" CONFIG_NETDEVSIM=m modules >/dev/null
  mkdir -p "$DIR/root/lib/modules/$KABI/extra"
  cp "$DIR/build/linux-source-6.1/drivers/net/netdevsim/netdevsim.ko" "$DIR/root/lib/modules/$KABI/extra/"
  rm -rf "$DIR/build"
fi
depmod -b "$DIR/root" "$KABI"

# The initramfs: busybox, the modules needed to reach the host's root over 9p, and init.
say "building the initramfs"
I="$DIR/initramfs"; rm -rf "$I"; mkdir -p "$I"/{bin,dev,proc,sys,mods,host,newroot,upper,out}
cp /bin/busybox "$I/bin/busybox"
for a in sh mount umount insmod mkdir cat echo switch_root sleep poweroff ls mknod; do ln -s busybox "$I/bin/$a"; done
boot_modules=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay)
: > "$I/mods/order"
for m in "${boot_modules[@]}"; do
  # modprobe --show-depends lists dependencies first, the module last.
  modprobe -d "$DIR/root" -S "$KABI" --show-depends "$m" 2>/dev/null | awk '$1=="insmod" {print $2}' | while read -r ko; do
    b=$(basename "$ko")
    grep -qx "$b" "$I/mods/order" || { cp "$ko" "$I/mods/$b"; echo "$b" >> "$I/mods/order"; }
  done
done
cp "$HERE/init" "$I/init"; chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$DIR/initramfs.gz")
cp "$DIR/root/boot/vmlinuz-$KABI" "$DIR/vmlinuz"
echo "$KABI" > "$DIR/kabi"
touch "$DIR/ready"
echo "$DIR"
