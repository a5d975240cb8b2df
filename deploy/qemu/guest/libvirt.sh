# A libvirt domain's guest: the agent on the port libvirt made, until the host says finish.
# Steps are paced by files in /out that the test on the host writes (go-*) and reads (step-*).
. "$(dirname "$0")/lib.sh"
BIN="$(cat /out/bin)"
modprobe -a virtio_console virtio_net sch_htb cls_u32 inet_diag tcp_diag udp_diag
ip link set eth0 up
"$BIN/tandem-agent" run --interface eth0 --interval 100ms --log-level debug >> /out/agent.log 2>&1 &
wait_connected 240
touch /out/step-welcomed
wait_file /out/go-finish 900
exit 0
