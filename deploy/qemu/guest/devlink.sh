# The devlink backend against a kernel driver that implements devlink rate: netdevsim in
# switchdev mode (its VF ports have rate leaves; nodes are made by name).
. "$(dirname "$0")/lib.sh"
BIN="$(cat /out/bin)"
DEV=netdevsim11
modprobe netdevsim || { log "no netdevsim"; exit 5; }
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
make_device() {
  echo "11 1" > /sys/bus/netdevsim/new_device
  local i=0; until ls /sys/bus/netdevsim/devices/$DEV/net/ >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); [ $i -ge 50 ] && exit 6; done
  # The PF is the device's only netdev until switchdev mode adds the VFs' representors.
  PF=$(ls /sys/bus/netdevsim/devices/$DEV/net/ | head -1)
  echo 4 > /sys/bus/netdevsim/devices/$DEV/sriov_numvfs
  devlink dev eswitch set netdevsim/$DEV mode switchdev || { log "switchdev mode refused"; exit 7; }
  ip link set "$PF" up
}
# What netdevsim keeps for each VF's leaf (its debugfs), beside what devlink reports.
snapshot() { # snapshot NAME
  devlink -j port function rate show > "/out/rate-$1.json"
  "$BIN/tandem-host" fairness --json --config /run/tandem/host.toml > "/out/fairness-$1.json" 2>/dev/null || true
  for p in 128 129 130 131; do
    d=/sys/kernel/debug/netdevsim/$DEV/ports/$p
    echo "$p $(cat $d/tx_share 2>/dev/null || echo -) $(cat $d/tx_max 2>/dev/null || echo -) $(cat $d/rate_parent 2>/dev/null || echo -)"
  done > "/out/debugfs-$1.txt"
}
make_device
echo "$PF" > /out/pf
devlink -j port show > /out/ports.json
mkdir -p /run/tandem
write_config() { # write_config B_GROUP_LINE C_VM D_BACKEND
{ controller_toml; cat <<CFG

[[link]]
name = "pf"
capacity = "4gbit"

[[group]]
name = "t1"
link = "pf"
min = "1gbit"
max = "2gbit"

[[vm]]
name = "a"
backend = "devlink"
pf = "$PF"
vf = 0
group = "t1"
set_min_rate = true
min = "500mbit"

[[vm]]
name = "b"
backend = "devlink"
pf = "$PF"
vf = 1
$1
$2

[[vm]]
name = "d"
backend = "$3"
pf = "$PF"
vf = 3
CFG
} > /run/tandem/host.toml
}
write_config 'group = "t1"' '[[vm]]
name = "c"
backend = "devlink"
pf = "'"$PF"'"
vf = 2' sriov
"$BIN/tandem-host" run --config /run/tandem/host.toml --log-level debug > /out/host.log 2>&1 &
HOST=$!
sleep 4
snapshot set
# A driver-style reset: the devlink instance, its ports, leaves and nodes go and come back
# with nothing set. The controller is frozen through it so the reset itself is seen.
kill -STOP $HOST
echo 11 > /sys/bus/netdevsim/del_device
make_device
snapshot reset
kill -CONT $HOST
sleep 4
snapshot restored
# A reload: b leaves the group, c goes, d's VF goes from its PF's VF rate to its devlink leaf.
write_config '' '' devlink
kill -HUP $HOST
sleep 3
snapshot reloaded
kill $HOST
wait $HOST || true
# iproute2's own requests and the kernel's replies, for the test to hold Tandem's bytes against.
H=netdevsim/$DEV
S="strace -xx -s 65536 -e trace=sendto,sendmsg,recvmsg"
$S -o /out/strace-leaf.txt devlink port function rate set $H/131 tx_share 100mbit tx_max 200mbit
$S -o /out/strace-new.txt devlink port function rate add $H/fx tx_share 10mbit tx_max 20mbit
$S -o /out/strace-parent.txt devlink port function rate set $H/131 parent fx
$S -o /out/strace-noparent.txt devlink port function rate set $H/131 noparent
$S -o /out/strace-del.txt devlink port function rate del $H/fx
$S -o /out/strace-dump.txt devlink -j port function rate show > /out/rate-final.json
exit 0
