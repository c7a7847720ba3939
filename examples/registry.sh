# Start and stop a loopback CNCF distribution registry with its own config (no auth).
# Source this file, then: start_registry NAME PORT DATADIR; stop_registry NAME.
# The packaged /etc/docker/registry/config.yml turns on htpasswd auth; we never use it.

start_registry() {
  local name=$1 port=$2 data=$3
  mkdir -p "$data/storage"
  cat > "$data/config.yml" <<CFG
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $data/storage}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port
CFG
  docker-registry serve "$data/config.yml" >"$data/registry.log" 2>&1 &
  echo $! > "$data/pid"
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "registry $name did not start on 127.0.0.1:$port; see $data/registry.log" >&2
  return 1
}

stop_registry() {
  local data=$1
  if [ -f "$data/pid" ]; then kill "$(cat "$data/pid")" 2>/dev/null || true; rm -f "$data/pid"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
