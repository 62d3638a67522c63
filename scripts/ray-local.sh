#!/usr/bin/env bash
# scripts/ray-local.sh start|stop|status     (after: .venv/bin/pip install -e ".[ray]")
# A two-node Ray cluster on this machine for the `ray` tests: a head node and a second node
# that joins it, one CPU each (MNISTLAB_RAY_CPUS), each with a resource naming it (node_a,
# node_b). Both run from this checkout's .venv (MNISTLAB_RAY_VENV), so their workers import
# the same mnistlab and torch as the sweep that uses them. Logs, Ray's session folder and the
# PID of each node's `ray start --block` live in $MNISTLAB_RAY_DIR (default /tmp/mnistlab-ray);
# `stop` ends exactly those processes (each node is a process group of its own), not any other
# Ray on this machine. Use it with: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/mnistlab-ray/auth_token
# and hydra/launcher=ray_cluster hydra.launcher.ray.init.address=$(cat /tmp/mnistlab-ray/address)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${MNISTLAB_RAY_DIR:-/tmp/mnistlab-ray}
venv=${MNISTLAB_RAY_VENV:-$root/.venv}
port=${MNISTLAB_RAY_PORT:-6390}  # the head's port; not Ray's default 6379, which may be taken
cpus=${MNISTLAB_RAY_CPUS:-1}  # per node
wait_s=${MNISTLAB_RAY_WAIT_S:-90}  # how long `start` waits for both nodes
address=127.0.0.1:$port
ray=$venv/bin/ray
export RAY_USAGE_STATS_ENABLED=0  # no usage report sent from a test cluster
# Only holders of the cluster's token may run code on it (Ray's token authentication): its own
# token, in $dir, not ~/.ray/auth_token, which a local `ray.init()` creates and Ray would
# otherwise pick up in some processes and not in others. A sweep on this cluster needs both:
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/mnistlab-ray/auth_token
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$dir/auth_token

say() { echo "ray-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The PID in $dir/$1.pid if that process is alive and is a `ray start`; fails otherwise.
running() {
  local pid
  pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ray ] && echo "$pid"
}

# Start one node as `ray start --block` in a session of its own: its PID (and process group)
# is the node's, and stopping it stops the Ray processes it started.
start_node() {
  local name=$1
  shift
  if running "$name" >/dev/null; then
    say "$name already running (pid $(cat "$dir/$name.pid"))"
    return
  fi
  : >"$dir/$name.log"
  setsid "$ray" start --block --num-cpus="$cpus" --temp-dir="$dir/$name" \
    --object-store-memory=100000000 --disable-usage-stats "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  local deadline=$((SECONDS + wait_s))
  until grep -q "Ray runtime started" "$dir/$name.log"; do
    running "$name" >/dev/null || die "$name did not start: $(tail -3 "$dir/$name.log")"
    ((SECONDS < deadline)) || die "$name not started after ${wait_s}s; see $dir/$name.log"
    sleep 0.2
  done
}

# The number of nodes the cluster counts as alive.
alive_nodes() {
  "$venv/bin/python" - "$address" <<'EOF'
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(node["Alive"] for node in ray.nodes()))
EOF
}

start() {
  [ -x "$ray" ] || die "$ray not found: install Ray first: $venv/bin/pip install -e '$root[ray]'"
  local began=$SECONDS
  mkdir -p "$dir"
  echo "$address" >"$dir/address"
  if [ ! -s "$RAY_AUTH_TOKEN_PATH" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
  fi
  start_node head --head --port="$port" --node-ip-address=127.0.0.1 \
    --include-dashboard=false --resources='{"node_a": 1}'
  start_node worker --address="$address" --node-ip-address=127.0.0.1 \
    --resources='{"node_b": 1}'
  local nodes deadline=$((SECONDS + wait_s))
  until [ "$(nodes=$(alive_nodes 2>/dev/null) && echo "$nodes")" = 2 ]; do
    ((SECONDS < deadline)) || die "the cluster has not 2 nodes after ${wait_s}s; logs in $dir"
    sleep 0.5
  done
  say "2 nodes up after $((SECONDS - began))s; use them with: export RAY_AUTH_MODE=token" \
    "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH, and hydra.launcher.ray.init.address=$address"
}

stop_node() {
  local name=$1 pid deadline
  if pid=$(running "$name"); then
    kill -TERM "$pid"  # `ray start --block` ends the node's processes, then itself
    deadline=$((SECONDS + 40))  # a node drains its tasks for up to 30 s first
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    say "stopped $name (pid $pid)"
  fi
  # What is left of its process group (a worker process the node did not end; or all of it,
  # where `ray start` itself was killed): ended too.
  if pid=$(cat "$dir/$name.pid" 2>/dev/null) && kill -0 -- "-$pid" 2>/dev/null; then
    say "$name: ending what is left of process group $pid"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$dir/$name.pid"
}

stop() {
  rm -f "$dir/address"  # no cluster to find there any more
  stop_node worker
  stop_node head
}

status() {
  local name pid
  for name in head worker; do
    if pid=$(running "$name"); then
      say "$name: running (pid $pid)"
    else
      say "$name: not running"
    fi
  done
  running head >/dev/null && "$ray" status --address="$address"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
