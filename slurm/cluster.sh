#!/usr/bin/env bash
# A real SLURM cluster on this machine, for trying `iprox-ray submit` and for the test-suite.
#
#   slurm/cluster.sh start DIR [NODES [CPUS_PER_NODE [MEM_MB_PER_NODE]]]   # NODES: 1 or 2
#   slurm/cluster.sh stop DIR
#   source DIR/env.sh        # SLURM_CONF and the sacct stand-in for your shell
#
# Everything lives under DIR (config, munge key and socket, state, spool, logs, PID files); the
# daemons (munged, slurmctld, one slurmd per node) run in the foreground of a background job (in
# their own session, so a Ctrl-C in the starting shell does not reach them) so their PIDs are known, and `stop` ends exactly those PIDs. Ports are probed free, and the first
# job id is derived from the clock, so clusters started one after another never reuse job ids.
# Needs root and the Debian packages slurmctld slurmd slurm-client munge (slurm-wlm 22.05).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # runuser, munged, slurmctld live there

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-}"
dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { sed -n '2,9p' "$0"; exit 2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "cluster.sh: timed out waiting for $what; logs in $dir/log" >&2
      return 1
    fi
    sleep 0.2
  done
}

stop_pid() {  # stop_pid NAME: TERM, wait up to 10 s, then KILL; only the PID we recorded
  local file="$dir/pids/$1.pid" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

queue_empty() {
  [[ -z "$(squeue -h -o %i)" ]]
}

nodes_idle() {
  local states
  states="$(sinfo -h -N -o %T)"
  [[ -n "$states" && "$(grep -cv '^idle$' <<<"$states")" == 0 ]]
}

start() {
  local nodes="${3:-1}" cpus="${4:-2}" mem="${5:-8000}"
  [[ "$nodes" == 1 || "$nodes" == 2 ]] || { echo "cluster.sh: NODES must be 1 or 2" >&2; exit 2; }
  [[ -x /usr/sbin/slurmctld && -x /usr/sbin/munged ]] || { echo "cluster.sh: slurmctld missing: apt-get install -y slurmctld slurmd slurm-client munge" >&2; exit 1; }
  [[ ! -f "$dir/pids/slurmctld.pid" ]] || { echo "cluster.sh: a cluster already runs in $dir" >&2; exit 1; }
  mkdir -p "$dir"/{state,log,pids,bin} "$dir/munge"
  dir="$(cd "$dir" && pwd)"
  chmod 755 "$dir"  # munged runs as the munge user and must reach its own folder

  # munge: our own key and socket, so we neither need nor disturb a system munged
  chown munge: "$dir/munge"; chmod 755 "$dir/munge"  # the socket folder must be searchable by all
  [[ -f "$dir/munge/munge.key" ]] || {
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
    chown munge: "$dir/munge/munge.key"; chmod 600 "$dir/munge/munge.key"
  }
  setsid runuser -u munge -- /usr/sbin/munged -F --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" >"$dir/log/munged.out" 2>&1 &
  echo $! >"$dir/pids/munged.pid"
  wait_for 10 munged test -S "$dir/munge/munge.socket"

  local ctld_port; ctld_port="$(free_port)"
  local node_lines="" names=""
  for i in $(seq 1 "$nodes"); do
    node_lines+="NodeName=n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$cpus RealMemory=$mem State=UNKNOWN"$'\n'
    names+="${names:+,}n$i"
  done
  cat >"$dir/slurm.conf" <<EOF
# Written by slurm/cluster.sh: a $nodes-node SLURM cluster on localhost.
ClusterName=iprox
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
FirstJobId=$(( $(date +%s) % 50000000 + 1000 ))
# Short grace periods: a cancelled job is killed 3 s after SIGTERM; finished jobs stay visible
# to scontrol show job (and so to the sacct stand-in) for an hour.
KillWait=3
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool-%n
SlurmctldPidFile=$dir/state/slurmctld.pid
SlurmdPidFile=$dir/state/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
${node_lines}PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP
EOF
  install -m 755 "$here/sacct-standin" "$dir/bin/sacct"
  cat >"$dir/env.sh" <<EOF
export SLURM_CONF=$dir/slurm.conf
export PATH=$dir/bin:\$PATH
EOF
  export SLURM_CONF="$dir/slurm.conf"

  setsid /usr/sbin/slurmctld -D -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
  echo $! >"$dir/pids/slurmctld.pid"
  wait_for 30 slurmctld scontrol ping
  for i in $(seq 1 "$nodes"); do
    setsid /usr/sbin/slurmd -D -N "n$i" -f "$SLURM_CONF" >"$dir/log/slurmd-n$i.out" 2>&1 &
    echo $! >"$dir/pids/slurmd-n$i.pid"
  done
  wait_for 60 "idle nodes" nodes_idle
  echo "SLURM cluster with $nodes node(s) up in $dir: source $dir/env.sh"
}

stop() {
  [[ -d "$dir/pids" ]] || { echo "cluster.sh: no cluster in $dir" >&2; return 0; }
  local f
  # Cancel what still runs (suspended jobs too) and let slurmd end it, so no job process outlives the cluster.
  if [[ -f "$dir/slurm.conf" && -f "$dir/pids/slurmctld.pid" ]]; then
    export SLURM_CONF="$dir/slurm.conf"
    if [[ -n "$(squeue -h -o %i 2>/dev/null)" ]]; then
      squeue -h -o %i | xargs -r scancel 2>/dev/null || true
      wait_for 60 "jobs to end" queue_empty || true
    fi
  fi
  for f in "$dir"/pids/slurmd-*.pid; do [[ -e "$f" ]] && stop_pid "$(basename "$f" .pid)"; done
  stop_pid slurmctld
  stop_pid munged
  echo "SLURM cluster in $dir stopped"
}

case "$cmd" in
  start) start "$@" ;;
  stop) stop ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
