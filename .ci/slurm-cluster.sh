#!/usr/bin/env bash
# Start/stop a throw-away one-node SLURM cluster on this machine, for tests.
#
#   .ci/slurm-cluster.sh start    # install (if needed), configure, start, wait for idle node
#   .ci/slurm-cluster.sh status   # show what runs and what sinfo says
#   .ci/slurm-cluster.sh stop     # stop exactly what `start` started, remove what it created
#
# Everything lives in a private state dir (default /tmp/ckptlens-slurm, override
# with CKPTLENS_SLURM_DIR): munge key + socket, slurm.conf, gres.conf, spool,
# logs and pid files.  Only two things are created outside it, because the
# snakemake SLURM executor strips SLURM_* variables (so SLURM_CONF is lost)
# before its inner `srun`: /etc/slurm/slurm.conf and /etc/slurm/gres.conf,
# as symlinks into the state dir.  They are created only where nothing exists
# yet (or where our own symlink already is) and recorded, so that `stop`
# removes exactly those.
#
# Needs root (daemons, apt, /etc/slurm).  No systemd: daemons are started
# directly.  Exit codes: 0 ok, 3 prerequisites missing (not root, or the
# packages cannot be installed: callers may skip), anything else is a failure.
#
# Other knobs (env): CKPTLENS_SLURM_TIMEOUT (seconds to wait for an idle node,
# default 60), CKPTLENS_SLURMCTLD_PORT (6817), CKPTLENS_SLURMD_PORT (6818).
set -euo pipefail

STATE_DIR="${CKPTLENS_SLURM_DIR:-/tmp/ckptlens-slurm}"
TIMEOUT="${CKPTLENS_SLURM_TIMEOUT:-60}"
CTLD_PORT="${CKPTLENS_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${CKPTLENS_SLURMD_PORT:-6818}"
ETC_SLURM=/etc/slurm
PACKAGES=(slurmctld slurmd slurm-client munge)

ETC="$STATE_DIR/etc"
MUNGE_DIR="$STATE_DIR/munge"            # 0700: key, seed, log, pid
MUNGE_SOCK_DIR="$STATE_DIR/munge-sock"  # 0755: socket clients connect to
MUNGE_SOCKET="$MUNGE_SOCK_DIR/munge.socket"
RUN="$STATE_DIR/run"
LOG="$STATE_DIR/log"
SPOOL="$STATE_DIR/spool"
CREATED="$STATE_DIR/created-paths"      # what we created outside STATE_DIR
NODE="$(hostname -s)"
# our own client commands (sinfo, squeue, scancel) must talk to our cluster
export SLURM_CONF="$ETC/slurm.conf"

# daemon name -> pid file (the daemons write these themselves)
declare -A PIDFILE=(
  [munged]="$MUNGE_DIR/munged.pid"
  [slurmctld]="$RUN/slurmctld.pid"
  [slurmd]="$RUN/slurmd.pid"
)

log() { echo "slurm-cluster: $*" >&2; }
die() { log "ERROR: $*"; exit "${2:-1}"; }

require_root() {
  [[ "$(id -u)" == 0 ]] || die "must run as root (daemons, apt-get, $ETC_SLURM)" 3
}

# ---------------------------------------------------------------- packages
have_binaries() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sinfo >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null
}

ensure_packages() {
  have_binaries && return 0
  command -v apt-get >/dev/null || die "slurm is not installed and apt-get is unavailable" 3
  export DEBIAN_FRONTEND=noninteractive
  log "installing ${PACKAGES[*]}"
  # `apt-get update` only when apt does not know the packages yet.
  if ! apt-cache show "${PACKAGES[@]}" >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -q >"$STATE_DIR/apt.log" 2>&1 ||
      { cat "$STATE_DIR/apt.log" >&2; die "apt-get update failed" 3; }
  fi
  # policy-rc.d stops any maintainer script from starting the services (we
  # start our own daemons; there is no systemd here anyway).  Only if absent.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1
  fi
  local rc=0
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE_DIR/apt.log" 2>&1 || rc=$?
  [[ $made_policy == 1 ]] && rm -f "$policy"
  if [[ $rc != 0 ]]; then
    tail -n 30 "$STATE_DIR/apt.log" >&2
    die "apt-get install ${PACKAGES[*]} failed (rc=$rc)" 3
  fi
  have_binaries || die "packages installed but binaries still missing" 3
}

# ---------------------------------------------------------------- processes
# pid of daemon $1 if its pid file names a live process of that name, else ""
daemon_pid() {
  local name=$1 f=${PIDFILE[$1]} pid
  [[ -s $f ]] || return 0
  pid=$(tr -dc '0-9' <"$f")
  [[ -n $pid && -r /proc/$pid/comm ]] || return 0
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] && echo "$pid"
  return 0
}

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 10 s, then KILL
  local name=$1 pid=$2
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    [[ -d /proc/$pid ]] || return 0
    # a zombie counts as gone
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && return 0
    sleep 0.1
  done
  log "$name (pid $pid) ignored TERM, sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# slurmstepd processes spawned by *our* slurmd: they keep our slurmd log open.
our_stepds() {
  local p fd
  for p in /proc/[0-9]*; do
    [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
    for fd in "$p"/fd/*; do
      if [[ "$(readlink "$fd" 2>/dev/null)" == "$STATE_DIR/"* ]]; then
        echo "${p#/proc/}"; break
      fi
    done
  done
}

descendants() {  # all descendant pids of $1, deepest last
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"; descendants "$child"
  done
}

all_running() {
  [[ -n "$(daemon_pid munged)" && -n "$(daemon_pid slurmctld)" && -n "$(daemon_pid slurmd)" ]]
}

# ---------------------------------------------------------------- config
write_configs() {
  local cpus boards sockets cores threads realmem
  # the node line must not claim more than slurmd sees, or the node drains
  local hw; hw=$(slurmd -C | head -n 1)
  get() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
  cpus=$(get CPUs); boards=$(get Boards); sockets=$(get SocketsPerBoard)
  cores=$(get CoresPerSocket); threads=$(get ThreadsPerCore); realmem=$(get RealMemory)
  [[ -n $cpus && -n $realmem ]] || die "could not parse 'slurmd -C': $hw"
  realmem=$(( realmem * 9 / 10 ))   # a margin below what slurmd reports

  cat >"$ETC/slurm.conf" <<EOF
# Generated by .ci/slurm-cluster.sh -- throw-away one-node test cluster.
ClusterName=ckptlens-test
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE_SOCKET}
StateSaveLocation=${SPOOL}/ctld
SlurmdSpoolDir=${SPOOL}/d
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no systemd in containers / CI
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: sacct does not work, use squeue for status (see docs/slurm.md)
AccountingStorageType=accounting_storage/none
# squeue keeps finished jobs visible this long; the snakemake plugin needs
# MinJobAge >= 3 x its initial status-check delay or it falls back to sacct
MinJobAge=300
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
GresTypes=gpu
ReturnToService=2
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=${realmem} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # A GPU line without File= is dropped silently and the node drains;
  # /dev/null is enough for scheduling (there is no real GPU behind it).
  cat >"$ETC/gres.conf" <<EOF
# Generated by .ci/slurm-cluster.sh -- fake GPU for scheduling tests only.
NodeName=${NODE} Name=gpu File=/dev/null
EOF
}

record() { grep -qxF -- "$1" "$CREATED" 2>/dev/null || echo "$1" >>"$CREATED"; }

link_etc() {
  if [[ ! -e $ETC_SLURM && ! -L $ETC_SLURM ]]; then
    mkdir -p "$ETC_SLURM"; record "dir $ETC_SLURM"
  fi
  [[ -d $ETC_SLURM ]] || die "$ETC_SLURM exists and is not a directory"
  local f target
  # check both before creating either
  for f in slurm.conf gres.conf; do
    target="$ETC/$f"
    if [[ -L $ETC_SLURM/$f && "$(readlink "$ETC_SLURM/$f")" == "$target" ]]; then
      :   # ours already (e.g. an earlier start)
    elif [[ -e $ETC_SLURM/$f || -L $ETC_SLURM/$f ]]; then
      die "$ETC_SLURM/$f exists and is not our symlink (-> $target); refusing to touch it. \
Remove or move it if it is a leftover; the snakemake SLURM plugin's srun reads $ETC_SLURM/slurm.conf."
    fi
  done
  for f in slurm.conf gres.conf; do
    [[ -L $ETC_SLURM/$f ]] || ln -s "$ETC/$f" "$ETC_SLURM/$f"
    record "link $ETC_SLURM/$f"
  done
}

unlink_etc() {
  [[ -f $CREATED ]] || return 0
  local kind path
  # links first, then the directory
  while read -r kind path; do
    [[ $kind == link ]] || continue
    if [[ -L $path && "$(readlink "$path")" == "$STATE_DIR/"* ]]; then
      rm -f "$path"; log "removed $path"
    fi
  done <"$CREATED"
  while read -r kind path; do
    [[ $kind == dir ]] || continue
    if rmdir "$path" 2>/dev/null; then log "removed $path"; fi
  done <"$CREATED"
  rm -f "$CREATED"
}

# ---------------------------------------------------------------- diagnostics
dump_logs() {
  local f
  for f in "$LOG/slurmctld.log" "$LOG/slurmd.log" "$MUNGE_DIR/munged.log" \
           "$LOG/slurmctld.out" "$LOG/slurmd.out" "$LOG/munged.out"; do
    [[ -s $f ]] || continue
    echo "----- tail $f -----" >&2; tail -n 40 "$f" >&2
  done
  echo "----- sinfo -R -----" >&2; sinfo -R 2>&1 >&2 || true
  echo "----- scontrol show node -----" >&2; scontrol show node 2>&1 >&2 || true
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true; }

wait_idle() {
  local deadline=$(( SECONDS + TIMEOUT )) st=""
  while (( SECONDS < deadline )); do
    st=$(node_state)
    case "$st" in
      # a drained/invalid node may still recover (ReturnToService=2): keep
      # waiting, the timeout prints the reason (sinfo -R) and the logs
      idle|mixed|allocated|completing) log "node $NODE is $st"; return 0 ;;
    esac
    for d in munged slurmctld slurmd; do
      [[ -n "$(daemon_pid $d)" ]] || { dump_logs; die "$d died during start-up"; }
    done
    sleep 0.5
  done
  dump_logs
  die "node $NODE not idle after ${TIMEOUT}s (state: '${st:-unknown}')"
}

# ---------------------------------------------------------------- commands
cmd_stop() {
  require_root
  [[ -d $STATE_DIR ]] || { log "nothing to stop ($STATE_DIR absent)"; return 0; }
  # cancel jobs first so their slurmstepds go away with slurmd still alive
  if [[ -n "$(daemon_pid slurmctld)" ]] && command -v scancel >/dev/null; then
    local jobs=()
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    if (( ${#jobs[@]} )); then
      log "cancelling jobs still in the queue: ${jobs[*]}"
      scancel --quiet "${jobs[@]}" 2>/dev/null || true
      for _ in $(seq 20); do
        [[ -z "$(squeue -h -t R,CG -o %i 2>/dev/null || true)" ]] && break; sleep 0.5
      done
    fi
  fi
  local d pid
  for d in slurmd slurmctld munged; do
    pid=$(daemon_pid "$d")
    [[ -n $pid ]] && stop_pid "$d" "$pid"
    rm -f "${PIDFILE[$d]}"
  done
  # left-over job steps (only if jobs could not be cancelled, e.g. slurmctld
  # had died): kill each stepd's job processes, then the stepd itself
  local kids
  for pid in $(our_stepds); do
    kids=$(descendants "$pid")
    log "killing left-over slurmstepd $pid and its job processes: ${kids//$'\n'/ }"
    # shellcheck disable=SC2086
    [[ -n $kids ]] && kill -KILL $kids 2>/dev/null
    kill -KILL "$pid" 2>/dev/null || true
  done
  unlink_etc
  log "stopped"
}

cmd_start() {
  require_root
  mkdir -p "$STATE_DIR"; chmod 755 "$STATE_DIR"
  ensure_packages
  if all_running && [[ -L $ETC_SLURM/slurm.conf ]]; then
    log "already running (state dir $STATE_DIR)"
    wait_idle
    return 0
  fi
  # partial leftovers of an earlier start: clean them before starting afresh
  cmd_stop >/dev/null 2>&1 || true

  local t0=$SECONDS
  rm -rf "$SPOOL" "$RUN" "$LOG"
  mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/d" "$MUNGE_DIR" "$MUNGE_SOCK_DIR"
  chmod 700 "$MUNGE_DIR"; chmod 755 "$MUNGE_SOCK_DIR" "$ETC"

  # munged run as root refuses the packaged key (owned by munge): own key.
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    (umask 077; head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key")
  fi
  chown root:root "$MUNGE_DIR/munge.key"; chmod 400 "$MUNGE_DIR/munge.key"

  write_configs
  link_etc

  log "starting munged"
  munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="${PIDFILE[munged]}" --log-file="$MUNGE_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" </dev/null >"$LOG/munged.out" 2>&1 ||
    { dump_logs; die "munged failed to start"; }
  munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null ||
    { dump_logs; die "munge round trip failed"; }

  log "starting slurmctld"
  slurmctld -f "$ETC/slurm.conf" </dev/null >"$LOG/slurmctld.out" 2>&1 ||
    { dump_logs; die "slurmctld failed to start"; }
  log "starting slurmd"
  slurmd -f "$ETC/slurm.conf" -N "$NODE" </dev/null >"$LOG/slurmd.out" 2>&1 ||
    { dump_logs; die "slurmd failed to start"; }
  # the daemons write their pid files right after forking
  for _ in $(seq 50); do all_running && break; sleep 0.1; done
  all_running || { dump_logs; die "a daemon did not come up (see logs above)"; }

  wait_idle
  log "cluster up in $(( SECONDS - t0 ))s: state dir $STATE_DIR, config $ETC_SLURM/slurm.conf"
}

cmd_status() {
  local d pid rc=0
  for d in munged slurmctld slurmd; do
    pid=$(daemon_pid "$d")
    if [[ -n $pid ]]; then echo "$d: running (pid $pid)"; else echo "$d: not running"; rc=1; fi
  done
  [[ -f $CREATED ]] && { echo "created:"; sed 's/^/  /' "$CREATED"; }
  if [[ $rc == 0 ]]; then sinfo 2>&1 || rc=1; fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
