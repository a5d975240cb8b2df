# The real virtio-serial port: the agent in the guest, the controller on the host.
# Steps are paced by files in /out that the test on the host writes (go-*) and reads (step-*).
. "$(dirname "$0")/lib.sh"
BIN="$(cat /out/bin)"
modprobe -a virtio_console virtio_net sch_htb cls_u32 inet_diag tcp_diag udp_diag
ip link set eth0 up && ip addr add 10.88.0.2/24 dev eth0
port=$(for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = org.tandem.agent.0 ] && basename $p; done)
log "port $port found by name in sysfs (no udev: no /dev/virtio-ports link)"

start_agent() { "$BIN/tandem-agent" run --interface eth0 --interval 100ms --log-level debug >> /out/agent.log 2>&1 & echo $! > /out/agent.pid; }
start_agent
wait_connected 60
tc class show dev eth0 > /out/tc-welcomed.txt
touch /out/step-welcomed

# A guest application reserves bandwidth through the agent's socket.
"$BIN/tandem-agent" reserve 5mbit --proto tcp --dst 10.88.0.1:5201 --ttl 300s > /out/reservation.id 2>/out/reservation.err
touch /out/step-reserved

# The host restarts its controller; the agent greets the new one.
wait_file /out/go-host-restarted 120
sleep 1
wait_connected 60
agent_status > /out/status-after-host-restart.json
touch /out/step-host-restart-seen

# The agent restarts; the host must notice (a new session).
kill "$(cat /out/agent.pid)"; sleep 1
start_agent
wait_connected 60
touch /out/step-agent-restarted

# Shaping: the host lowers this VM's cap; the guest's tree follows; iperf3 shows it.
wait_file /out/go-shaping 120
i=0; until tc class show dev eth0 | grep -q "class htb 1:1 root rate $(cat /out/expected-soft)"; do sleep 0.2; i=$((i+1)); [ $i -ge 150 ] && break; done
tc class show dev eth0 > /out/tc-shaped.txt
iperf3 -c 10.88.0.1 -p 5201 -t 6 -O 1 -J > /out/iperf-shaped.json 2>/out/iperf.err
touch /out/step-shaped
wait_file /out/go-finish 60
kill "$(cat /out/agent.pid)"
exit 0
