#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback, for the SLURM workflow test (tests/workflow/test_slurm.py).
#
# Installs Debian's slurm-wlm and munge, writes a minimal slurm.conf (one node "localhost" with this
# machine's CPUs, one partition "debug", no cgroups, no accounting database), starts munged, slurmctld and
# slurmd in the background (no systemd) and waits until `sinfo` shows the node idle.
#
# Idempotent: a second run with the cluster up and the same config returns in about a second; a changed
# config restarts the daemons. Needs root (or sudo). Everything listens on 127.0.0.1 only.
#
# Knobs (environment):
#   SLURM_SETUP_TIMEOUT   seconds to wait for the node to become idle (default 60)
#   SLURM_NODE_MEM_MB     memory declared for the node (default: max(physical, 65536)); memory is not a
#                         consumable resource here (CR_Core) and slurmd trusts slurm.conf
#                         (config_overrides), so this only makes the profile's per-rule --mem requests
#                         admissible on a small runner.
#   SLURM_SKIP_INSTALL=1  do not call apt-get (packages already present)
#
# Status queries: there is no slurmdbd, so `sacct` cannot answer. The Snakemake SLURM plugin is told to
# use `squeue` (--slurm-status-command squeue); MinJobAge below keeps finished jobs visible to squeue
# long enough for that (the plugin needs MinJobAge >= 3 x its first status-check delay).
set -euo pipefail

TIMEOUT=${SLURM_SETUP_TIMEOUT:-60}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
PARTITION=debug
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "slurm-setup: needs root or sudo" >&2; exit 1; }
    SUDO="sudo -n"
fi
# Daemons run at normal priority even when this script is called under `nice` (jobs still get the
# submitter's nice value: PropagatePrioProcess below).
DAEMON="$SUDO"
if [ "$(nice)" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then DAEMON="nice -n -$(nice)"; fi
log() { echo "slurm-setup: $*"; }
die() { echo "slurm-setup: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
if [ "${SLURM_SKIP_INSTALL:-0}" != 1 ] && ! { command -v slurmctld && command -v slurmd && command -v sbatch \
        && command -v munged; } >/dev/null 2>&1; then
    command -v apt-get >/dev/null || die "apt-get not found: install slurm-wlm and munge yourself"
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
fi
for tool in slurmctld slurmd munged sbatch sinfo scontrol squeue; do
    PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || die "$tool not found after install"
done
export PATH=$PATH:/usr/sbin:/sbin

# ---------------------------------------------------------------- slurm.conf
NCPU=$(nproc)
PHYS_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
MEM_MB=${SLURM_NODE_MEM_MB:-$(( PHYS_MB > 65536 ? PHYS_MB : 65536 ))}
NEW_CONF=$(cat <<EOF
# Written by .ci/slurm-setup.sh: single-node CI cluster on loopback. Do not use in production.
ClusterName=kdbench-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (no systemd in the sandbox / CI container).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database: squeue answers job status (see MinJobAge).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Trust this file's node description (memory is declared, not probed).
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
# The node is this machine: never mark it down for a slow answer (a paused slurmd would requeue jobs).
SlurmdTimeout=0
InactiveLimit=0
KillWait=5
# Jobs run at the nice value of the process that submitted them (slurmd itself stays at its own).
PropagatePrioProcess=1
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)

slurm_ping() { timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; }
slurmd_alive() { local pid; pid=$(cat /run/slurm/slurmd.pid 2>/dev/null || true); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
node_state() { timeout 5 sinfo -h -N -n localhost -o %T 2>/dev/null | head -1; }
stop_pidfile() {  # stop the daemon recorded in a pid file (ours), wait for it to go
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        $SUDO kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    $SUDO rm -f "$pidfile"
}

CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    CHANGED=1
    $SUDO mkdir -p "$CONF_DIR"
    printf '%s\n' "$NEW_CONF" | $SUDO tee "$CONF" >/dev/null
    log "wrote $CONF (node localhost: CPUs=$NCPU RealMemory=$MEM_MB, partition $PARTITION)"
fi

# Fast path: already up with this config.
if [ "$CHANGED" = 0 ] && slurm_ping && slurmd_alive && [ "$(node_state)" = idle ]; then
    log "cluster already up (node localhost idle)"
    exit 0
fi

$SUDO mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm

# ---------------------------------------------------------------- munge
$SUDO mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
$SUDO chown munge:munge /run/munge /var/lib/munge /var/log/munge
$SUDO chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then $SUDO mungekey --create --keyfile=/etc/munge/munge.key
    else $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
$SUDO chown munge:munge /etc/munge/munge.key
$SUDO chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    $SUDO rm -f /run/munge/munged.pid
    $DAEMON runuser -u munge -- munged || die "munged failed to start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------- slurmctld / slurmd
if [ "$CHANGED" = 1 ]; then
    stop_pidfile /run/slurm/slurmd.pid
    stop_pidfile /run/slurm/slurmctld.pid
fi
if ! slurm_ping; then
    stop_pidfile /run/slurm/slurmctld.pid
    log "starting slurmctld"
    # -c: fresh state (no jobs/nodes from an older config); -i: ignore state-file errors.
    $DAEMON slurmctld -c -i || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
    for _ in $(seq $(( TIMEOUT * 5 ))); do slurm_ping && break; sleep 0.2; done
    slurm_ping || { tail -20 /var/log/slurm/slurmctld.log >&2 || true; die "slurmctld not answering"; }
fi
if ! slurmd_alive; then
    log "starting slurmd"
    $DAEMON slurmd -N localhost || die "slurmd failed to start (see /var/log/slurm/slurmd.log)"
fi

# ---------------------------------------------------------------- wait for an idle node
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(node_state)
    case "$state" in
        idle) break ;;
        down*|drain*|fail*|unknown*)  # e.g. down after a controller restart: bring it back
            $SUDO scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
if [ "$state" != idle ]; then
    sinfo -N -l >&2 || true
    tail -20 /var/log/slurm/slurmd.log >&2 || true
    die "node localhost not idle after ${TIMEOUT}s (state: '${state:-none}'); logs in /var/log/slurm/"
fi
log "cluster up: $(sinfo -h -o '%P %a %D %T %c CPUs')"
