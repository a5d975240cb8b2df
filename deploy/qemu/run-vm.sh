#!/usr/bin/env bash
# Boots the test VM once: runs SCRIPT (a path on the host) inside the guest and powers off.
#   run-vm.sh --script PATH --out DIR [--serial-socket SOCK] [--tap TAP] [--mem 1G] [--timeout 300]
# The guest sees the host's root read-only (under a tmpfs overlay), DIR as /out (read-write,
# where the script writes guest.log and guest.status), a virtio-serial port named
# org.tandem.agent.0 backed by SOCK (a unix socket QEMU listens on), and, with --tap, a
# virtio-net NIC on the host's TAP device (create it, in the caller's namespace, first).
# TCG unless --accel kvm (or TANDEM_VM_ACCEL=kvm). Prints QEMU's pid file path; exits with
# the guest script's status.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
script="" out="" sock="" tap="" mem="1G" timeout=300 accel="${TANDEM_VM_ACCEL:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --script) script="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --serial-socket) sock="$2"; shift 2 ;;
    --tap) tap="$2"; shift 2 ;;
    --mem) mem="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --accel) accel="$2"; shift 2 ;;
    *) echo "run-vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$script" ] && [ -n "$out" ] || { echo "run-vm.sh: --script and --out are required" >&2; exit 2; }
DIR="$("$HERE/prepare.sh")"
KABI="$(cat "$DIR/kabi")"
# TCG by default: on these machines /dev/kvm opens but KVM aborts setting MSRs (nested).
[ -n "$accel" ] || accel=tcg
cpu=max; [ "$accel" = kvm ] && cpu=host
args=(-accel "$accel" -cpu "$cpu" -smp 2 -m "$mem" -nodefaults -nographic -no-reboot -serial "file:$out/console.log"
      -kernel "$DIR/vmlinuz" -initrd "$DIR/initramfs.gz"
      -append "console=ttyS0 quiet panic=-1 tandem.run=$script tandem.kabi=$KABI tandem.modules=$DIR/root/lib/modules/$KABI"
      -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
      -virtfs "local,path=$out,mount_tag=out,security_model=none,multidevs=remap"
      -pidfile "$out/qemu.pid")
if [ -n "$sock" ]; then
  args+=(-device virtio-serial-pci -chardev "socket,id=tandem0,path=$sock,server=on,wait=off"
         -device "virtserialport,chardev=tandem0,name=org.tandem.agent.0")
fi
if [ -n "$tap" ]; then
  args+=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56")
fi
echo "$accel" > "$out/accel"
rm -f "$out/guest.status"
timeout --kill-after=5 "$timeout" qemu-system-x86_64 "${args[@]}" || true
[ -f "$out/guest.status" ] || { echo "run-vm.sh: the guest did not finish (see $out/console.log)" >&2; exit 124; }
exit "$(cat "$out/guest.status")"
