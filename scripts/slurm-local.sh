#!/usr/bin/env bash
# scripts/slurm-local.sh start|stop|status     (as root; then: export SLURM_CONF=/tmp/mnistlab-slurm/slurm.conf)
# A one-node SLURM cluster on this machine for the `slurm` tests: munged, slurmctld and slurmd
# from Debian's slurm-wlm and munge (installed with apt-get where missing), one node with this
# machine's CPUs and memory, one default partition. Its config, munge key and socket, state,
# spool, logs and PID files all live in $MNISTLAB_SLURM_DIR (default /tmp/mnistlab-slurm);
# nothing in /etc is read or changed, and `stop` stops exactly the daemons it started.
set -euo pipefail

dir=${MNISTLAB_SLURM_DIR:-/tmp/mnistlab-slurm}
wait_s=${MNISTLAB_SLURM_WAIT_S:-60}  # how long `start` waits for the node to be idle
export SLURM_CONF=$dir/slurm.conf

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_if_missing() {
  local tool
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null && continue
    say "$tool not found: apt-get install slurm-wlm munge"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >&2
    return
  done
}

write_config() {
  mkdir -p "$dir/munge" "$dir/log"
  # munged refuses a socket folder that others cannot search, and a key others can read.
  chmod 755 "$dir" "$dir/munge"
  if [ ! -f "$dir/munge/munge.key" ]; then
    (umask 077 && head -c 1024 /dev/urandom >"$dir/munge/munge.key")
  fi
  # A fresh cluster each start: no jobs or node states left from an earlier one.
  rm -rf "$dir/state" "$dir/spool"
  mkdir -p "$dir/state" "$dir/spool"
  local node host cpus memory
  node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=..., as slurmd sees them
  host=${node#NodeName=} && host=${host%% *}
  cpus=${node#*CPUs=} && cpus=${cpus%% *}
  memory=${node#*RealMemory=} && memory=${memory%% *}
  cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster for mnistlab's slurm tests.
ClusterName=mnistlab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
MpiDefault=none
# Schedule pending jobs every 2 s, not every 60 s: a requeued job then starts as soon as it may.
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
# A job that asks for no memory gets its share per CPU, not the whole node.
DefMemPerCPU=$((memory / cpus))
MinJobAge=600
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  echo "$host" >"$dir/node"
}

# The PID in $2 if that process is alive and is $1; fails otherwise.
running() {
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

start_daemon() {
  local name=$1 pidfile=$2
  shift 2
  if running "$name" "$pidfile" >/dev/null; then
    say "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  "$@" || die "$name did not start; see $dir/log and $dir/munge/munged.log"
  local deadline=$((SECONDS + 10))
  until running "$name" "$pidfile" >/dev/null; do
    ((SECONDS < deadline)) || die "$name wrote no PID file $pidfile; see its log in $dir"
    sleep 0.1
  done
}

wait_idle() {
  local node state deadline=$((SECONDS + wait_s))
  node=$(cat "$dir/node")
  while :; do
    state=$(sinfo --noheader --nodes="$node" --format=%t 2>/dev/null || true)
    [ "$state" = idle ] && return
    if ((SECONDS >= deadline)); then
      die "node $node is not idle after ${wait_s}s (sinfo: '${state:-no answer}'; $(sinfo -R --noheader 2>&1 | head -1)); logs in $dir/log"
    fi
    sleep 0.2
  done
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root: it installs packages, and slurmd starts jobs as their users"
  local began=$SECONDS
  install_if_missing
  if ! running slurmctld "$dir/slurmctld.pid" >/dev/null; then
    write_config
  fi
  start_daemon munged "$dir/munge/munged.pid" munged \
    --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  start_daemon slurmctld "$dir/slurmctld.pid" slurmctld -f "$SLURM_CONF"
  start_daemon slurmd "$dir/slurmd.pid" slurmd -f "$SLURM_CONF"
  wait_idle
  say "node $(cat "$dir/node") idle after $((SECONDS - began))s; use it with: export SLURM_CONF=$SLURM_CONF"
}

# Cancel this cluster's jobs (their processes outlive slurmd), then end the daemons.
cancel_jobs() {
  running slurmctld "$dir/slurmctld.pid" >/dev/null || return 0
  local jobs deadline=$((SECONDS + 20))
  jobs=$(squeue --noheader --format=%A 2>/dev/null || true)
  [ -z "$jobs" ] && return
  say "cancelling jobs: $(echo $jobs)"
  # shellcheck disable=SC2086  # one argument per job id
  scancel $jobs || true
  while [ -n "$(squeue --noheader --format=%A 2>/dev/null || true)" ] && ((SECONDS < deadline)); do
    sleep 0.2
  done
}

stop_daemon() {
  local name=$1 pidfile=$2 pid deadline
  if pid=$(running "$name" "$pidfile"); then
    kill -TERM "$pid"
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        say "$name (pid $pid) ignored SIGTERM for 15s: SIGKILL"
        kill -KILL "$pid"
      fi
      sleep 0.1
    done
    say "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

stop() {
  cancel_jobs
  stop_daemon slurmd "$dir/slurmd.pid"
  stop_daemon slurmctld "$dir/slurmctld.pid"
  stop_daemon munged "$dir/munge/munged.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) die "usage: $0 start|stop|status" ;;
esac
