#!/usr/bin/env bash
# Stop the daemons that .ci/slurm-up.sh started, by the PIDs it recorded in $STATE/pids
# (newest first: slurmd, slurmctld, munged). A PID is signalled only while its process still has
# the recorded name, so a reused PID is never touched. Waits on each PID: the daemons delete
# their PID files before they exit.
# Usage: bash .ci/slurm-down.sh      (env CITAB_SLURM_STATE: state folder, default /var/tmp/citab-slurm)
set -euo pipefail

STATE=${CITAB_SLURM_STATE:-/var/tmp/citab-slurm}
STOP_WAIT_S=20

say() { echo "slurm-down: $*" >&2; }

if [ ! -s "$STATE/pids" ]; then
    say "nothing to stop (no $STATE/pids)"
    exit 0
fi

is_ours() {  # pid, name: alive and still the daemon we started
    [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm")" = "$2" ]
}

status=0
while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if ! is_ours "$pid" "$name"; then
        say "$name ($pid) already gone"
        continue
    fi
    kill -TERM "$pid"
    for _ in $(seq $((STOP_WAIT_S * 10))); do is_ours "$pid" "$name" || break; sleep 0.1; done
    if is_ours "$pid" "$name"; then
        say "$name ($pid) ignored SIGTERM for ${STOP_WAIT_S} s; sending SIGKILL"
        kill -KILL "$pid" || true
        status=1
    else
        say "stopped $name ($pid)"
    fi
done < <(tac "$STATE/pids")
: > "$STATE/pids"
exit "$status"
