# Helpers for the guest scripts: BIN is where the tandem binaries are (set by the test).
set -u
log() { echo "guest: $*"; }
wait_file() { # wait_file PATH SECONDS
  local i=0; while [ ! -e "$1" ]; do sleep 0.2; i=$((i+1)); [ $i -ge $(( $2 * 5 )) ] && { log "timed out waiting for $1"; exit 3; }; done
}
# The [controller] section of the guest scripts' host.toml: fast rounds, state under /run.
controller_toml() {
  printf '[controller]\ninterval = "100ms"\nadmin_socket = "/run/tandem/host.sock"\nstate_dir = "/run/tandem/state"\nmetrics = "off"\n'
}
agent_status() { "$BIN/tandem-agent" status --json 2>/dev/null; }
wait_connected() { # wait_connected SECONDS
  local i=0; until agent_status | grep -q '"host" : "connected"'; do sleep 0.2; i=$((i+1)); [ $i -ge $(( $1 * 5 )) ] && { log "agent never connected"; agent_status; exit 4; }; done
}
