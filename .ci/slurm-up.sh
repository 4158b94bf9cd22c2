#!/usr/bin/env bash
# Start a single-node SLURM (munge + slurmctld + slurmd, as root) with two fake GPUs, for the
# SLURM tests (tests/test_slurm.py). Works in a container without systemd or cgroups:
#   * daemons are started directly and their PIDs recorded in $STATE/pids (.ci/slurm-down.sh stops them);
#   * proctrack/linuxproc + task/none, because the cgroup plugins need a freezer cgroup we don't have;
#   * the fake GPUs are character devices (slurmd rejects regular files in gres.conf File=);
#   * no accounting daemon, so the Snakemake profile polls with squeue and MinJobAge keeps finished
#     jobs visible to squeue for 10 minutes;
#   * the config is at Debian's compiled-in path /etc/slurm/slurm.conf, because the executor's
#     job step drops SLURM_CONF inside jobs (a config elsewhere breaks the nested srun).
# Installs slurmctld slurmd slurm-client munge from Debian when they are missing.
# Idempotent: when our cluster already runs with an idle node, it only says so.
# Usage: bash .ci/slurm-up.sh        (env CITAB_SLURM_STATE: state folder, default /var/tmp/citab-slurm)
set -euo pipefail

STATE=${CITAB_SLURM_STATE:-/var/tmp/citab-slurm}
CONF_DIR=/etc/slurm
N_FAKE_GPUS=2
WAIT_IDLE_S=60

say() { echo "slurm-up: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it starts slurmd and writes $CONF_DIR)"

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n1; }
all_recorded_alive() {  # every daemon in $STATE/pids still runs under its recorded name
    [ -s "$STATE/pids" ] || return 1
    local name pid
    while read -r name pid; do
        [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
    done < "$STATE/pids"
}

if all_recorded_alive; then
    say "already running (node $(node_state); PIDs in $STATE/pids)"
    exit 0
fi
if [ -s "$STATE/pids" ]; then
    say "an earlier cluster is partly gone; stopping what is left of it"
    bash "$(dirname "$0")/slurm-down.sh" || true
fi

# --- packages -------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge from Debian"
    export DEBIAN_FRONTEND=noninteractive
    packages=(slurmctld slurmd slurm-client munge)
    apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
fi

mkdir -p "$STATE"/{ctld,spool,log,dev}
: > "$STATE/pids"

# --- munge: the authentication daemon every SLURM daemon and client talks to ------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge  # no systemd-tmpfiles here
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    [ -s /run/munge/munged.pid ] || die "munged did not start (see /var/log/munge/munged.log)"
    echo "munged $(cat /run/munge/munged.pid)" >> "$STATE/pids"
fi

# --- fake GPUs: character devices with the NVIDIA major number -------------------------------------
for index in $(seq 0 $((N_FAKE_GPUS - 1))); do
    device="$STATE/dev/nvidia$index"
    [ -c "$device" ] || { rm -f "$device"; mknod "$device" c 195 "$index"; }
done

# --- configuration ----------------------------------------------------------------------------------
HOST=$(hostname -s)
# The node line exactly as slurmd detects it: CPUs/RealMemory must not exceed what slurmd sees.
NODE_LINE=$(slurmd -C | head -n1)
case "$NODE_LINE" in NodeName=*) ;; *) die "unexpected 'slurmd -C' output: $NODE_LINE" ;; esac
mkdir -p "$CONF_DIR"
cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by .ci/slurm-up.sh: single-node test cluster with ${N_FAKE_GPUS} fake GPUs.
ClusterName=citab
SlurmctldHost=${HOST}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/spool
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MinJobAge=600
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
${NODE_LINE} Gres=gpu:${N_FAKE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$CONF_DIR/gres.conf" <<EOF
# Written by .ci/slurm-up.sh: fake GPUs (character devices, nothing behind them).
AutoDetect=off
NodeName=${HOST} Name=gpu File=${STATE}/dev/nvidia[0-$((N_FAKE_GPUS - 1))]
EOF
rm -f "$CONF_DIR/cgroup.conf"

# --- daemons ----------------------------------------------------------------------------------------
start_daemon() {  # name, pid file, command...
    local name=$1 pid_file=$2
    shift 2
    rm -f "$pid_file"
    "$@"
    for _ in $(seq 100); do [ -s "$pid_file" ] && break; sleep 0.1; done
    [ -s "$pid_file" ] || die "$name did not start (see $STATE/log/$name.log)"
    echo "$name $(cat "$pid_file")" >> "$STATE/pids"
}
start_daemon slurmctld "$STATE/slurmctld.pid" slurmctld -c   # -c: start without jobs of an earlier cluster
start_daemon slurmd "$STATE/slurmd.pid" slurmd

for _ in $(seq $((WAIT_IDLE_S * 5))); do
    if [ "$(node_state)" = "idle" ]; then
        say "node ${HOST} idle with gpu:${N_FAKE_GPUS} ($(tr '\n' ' ' < "$STATE/pids"))"
        exit 0
    fi
    sleep 0.2
done
die "node not idle after ${WAIT_IDLE_S} s (state: $(node_state)); logs in $STATE/log"
