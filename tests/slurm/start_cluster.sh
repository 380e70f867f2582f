#!/usr/bin/env bash
# A one-node SLURM cluster for the tests (issue: "a real SLURM cluster in the tests"), from Debian
# packages. Root on Linux only. Usage: tests/slurm/start_cluster.sh [DIR]  (default /tmp/reportsup-slurm)
# Prints `export SLURM_CONF=...`; the cluster keeps running until tests/slurm/stop_cluster.sh.
set -euo pipefail
DIR=${1:-/tmp/reportsup-slurm}
if [ "$(id -u)" != 0 ]; then echo "start_cluster.sh: needs root (installs packages, runs slurmd)" >&2; exit 2; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p "$DIR"/{state,spool,log}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
cat > "$DIR/slurm.conf" <<CONF
ClusterName=reportsup
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
KillWait=10
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
# munge: a key once, the daemon as root (--force: it refuses root otherwise)
[ -s /etc/munge/munge.key ] || (dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null && chmod 400 /etc/munge/munge.key)
mkdir -p /run/munge /var/log/munge /var/lib/munge
pgrep -x munged >/dev/null || munged --force
export SLURM_CONF=$DIR/slurm.conf
pgrep -x slurmctld >/dev/null || slurmctld -f "$SLURM_CONF" -i
pgrep -x slurmd >/dev/null || slurmd -f "$SLURM_CONF"
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -q -E "idle|mixed|alloc"; then echo "export SLURM_CONF=$SLURM_CONF"; exit 0; fi
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "start_cluster.sh: the node did not become idle; see $DIR/log" >&2
sinfo >&2 || true
exit 1
