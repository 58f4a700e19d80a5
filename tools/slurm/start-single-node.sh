#!/usr/bin/env bash
# Start a single-node SLURM on this machine from Debian's packages (for tests and CI).
#
# Run as root. Idempotent: installs slurm-wlm and munge when missing, writes a munge key
# and /etc/slurm/slurm.conf for this host (its real CPUs and memory from `slurmd -C`, one
# partition `debug`), starts munged, slurmctld and slurmd as daemons when they are not
# running, and waits until `sinfo` shows the node idle. Exits non-zero (one line on
# stderr) when it cannot: the SLURM tests then skip with a visible reason.
# Usage: tools/slurm/start-single-node.sh [--timeout SECONDS]
set -euo pipefail

TIMEOUT=90
[[ "${1:-}" == "--timeout" ]] && TIMEOUT="$2"
PARTITION=debug
CONF=/etc/slurm/slurm.conf

die() { echo "start-single-node: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v apt-get >/dev/null || die "needs a Debian/Ubuntu machine (apt-get)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || die "apt-get install slurm-wlm munge failed"
fi

# munge: a key readable only by the munge user, and the daemon.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    for _ in $(seq 20); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n </dev/null >/dev/null 2>&1 || die "munge does not answer"
fi

# slurm.conf for this host: the node line as slurmd itself measures it.
HOST=$(hostname -s)
grep -qw "$HOST" /etc/hosts || echo "127.0.0.1 $HOST" >>/etc/hosts
NODE=$(slurmd -C | head -1 | sed 's/ UpTime=.*//')
[[ "$NODE" == NodeName=* ]] || die "slurmd -C gave no node line"
install -d /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm
NEW=$(cat <<CONF
# Written by tools/slurm/start-single-node.sh: a single-node SLURM for tests.
ClusterName=rrnet-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerParameters=sched_interval=2
KillWait=5
MinJobAge=30
InactiveLimit=0
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
CHANGED=0
if [[ ! -f $CONF ]] || [[ "$(cat $CONF)" != "$NEW" ]]; then
    printf '%s\n' "$NEW" >$CONF
    CHANGED=1
fi

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurm/slurmctld.pid; then
    [[ $CHANGED -eq 1 ]] && scontrol reconfigure >/dev/null
else
    slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
fi
if ! running /run/slurm/slurmd.pid; then
    slurmd || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi

# Wait until the node is idle; resume it once if an earlier run left it down/drained.
deadline=$((SECONDS + TIMEOUT))
resumed=0
while :; do
    state=$(sinfo -h -p $PARTITION -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mixed|allocated) break ;;
        down*|drain*|*drain) if [[ $resumed -eq 0 ]]; then
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    ((SECONDS < deadline)) || die "node not idle after ${TIMEOUT}s (state: ${state:-none})"
    sleep 1
done
echo "start-single-node: SLURM up: partition $PARTITION, $NODE"
