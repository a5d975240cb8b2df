# The sriov backend against a kernel driver that implements VF rates: netdevsim.
. "$(dirname "$0")/lib.sh"
BIN="$(cat /out/bin)"
modprobe netdevsim || { log "no netdevsim"; exit 5; }
echo "10 1" > /sys/bus/netdevsim/new_device
i=0; until ls /sys/bus/netdevsim/devices/netdevsim10/net/ >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); [ $i -ge 50 ] && exit 6; done
PF=$(ls /sys/bus/netdevsim/devices/netdevsim10/net/ | head -1)
echo 4 > /sys/bus/netdevsim/devices/netdevsim10/sriov_numvfs
ip link set "$PF" up
echo "$PF" > /out/pf
ip -j link show "$PF" > /out/vf-before.json
mkdir -p /run/tandem
{ controller_toml; cat <<CFG

[[link]]
name = "pf"
capacity = "10gbit"

[[vm]]
name = "a"
backend = "sriov"
pf = "$PF"
vf = 0
set_min_rate = true
min = "2gbit"
max = "6gbit"

[[vm]]
name = "b"
backend = "sriov"
pf = "$PF"
vf = 2
CFG
} > /run/tandem/host.toml
# tandem-host check before the controller: the PF, the VFs, and a rate written on a VF no VM
# uses (vf 1), read back and put back.
"$BIN/tandem-host" check --json --config /run/tandem/host.toml > /out/check.json 2> /out/check.err
echo $? > /out/check.rc
ip -j link show "$PF" > /out/vf-after-check.json
"$BIN/tandem-host" run --config /run/tandem/host.toml --log-level debug > /out/host.log 2>&1 &
HOST=$!
sleep 4
ip -j link show "$PF" > /out/vf-set.json
"$BIN/tandem-host" fairness --json --config /run/tandem/host.toml > /out/fairness.json
# The controller is frozen through the reset, so the reset's own effect can be seen; then it
# runs on and must notice.
kill -STOP $HOST
# A driver-style reset: the device (a driver reload) and its VFs go away and come back with
# no limits. (Toggling sriov_numvfs alone keeps netdevsim's VF settings.)
echo 10 > /sys/bus/netdevsim/del_device
echo "10 1" > /sys/bus/netdevsim/new_device
i=0; until [ "$(ls /sys/bus/netdevsim/devices/netdevsim10/net/ 2>/dev/null)" = "$PF" ]; do sleep 0.1; i=$((i+1)); [ $i -ge 50 ] && { log "PF came back as $(ls /sys/bus/netdevsim/devices/netdevsim10/net/)"; exit 7; }; done
echo 4 > /sys/bus/netdevsim/devices/netdevsim10/sriov_numvfs
ip link set "$PF" up
ip -j link show "$PF" > /out/vf-reset.json
kill -CONT $HOST
sleep 8
ip -j link show "$PF" > /out/vf-restored.json
"$BIN/tandem-host" fairness --json --config /run/tandem/host.toml > /out/fairness-restored.json
kill $HOST
wait $HOST
exit 0
