#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, to run deploy/slurm's sharded extraction for real:
# configure munge and Slurm in a private folder, start the daemons, submit a job array of 4 shards, wait,
# `merge`, compare with one unsharded job, stop the daemons.
#
#   sudo apt-get install slurm-wlm munge      # Debian packages
#   deploy/slurm/try-local.sh [input.csv]     # as root (the daemons run as the calling user)
#
# Needs the release `xtask` binary (`cargo build --release -p xtask`) and a filled cache ($GRAFT_CACHE or
# .graft-cache, e.g. from `cargo xtask fetch`). Nothing is written outside a temporary folder but the outputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
xtask="${XTASK:-$repo/target/release/xtask}"
[ -x "$xtask" ] || { echo "build it first: cargo build --release -p xtask (or set XTASK)" >&2; exit 1; }
cache="${GRAFT_CACHE:-$repo/.graft-cache}"
input="${1:-$cache/datasets/mr/mr.csv}"
shards=4
# 1,024-row chunks: MR's 10,605 rows make 11, so every one of the 4 shards gets some (a shard without a
# chunk is refused). The unsharded job uses the same chunking: the chunk size is part of the output's identity.
chunk_rows=1024
work=$(mktemp -d /tmp/graft-slurm.XXXXXX)
user=$(id -un)
host=$(hostname -s)
cpus=$(nproc)

# munge: a key and a daemon of our own.
mkdir -p "$work/munge"
chmod 700 "$work/munge"
mungekey --create --keyfile="$work/munge/munge.key" --force
munged --key-file="$work/munge/munge.key" --socket="$work/munge/munge.socket" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed" --force

# Slurm: one node, one partition, no cgroups (containers often lack them).
mkdir -p "$work/state" "$work/spool" "$work/logs" "$work/out"
cat > "$work/slurm.conf" <<EOF
ClusterName=graft-local
SlurmctldHost=$host
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/logs/slurmctld.log
SlurmdLogFile=$work/logs/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"
stop() {
  [ -f "$work/slurmd.pid" ] && kill "$(cat "$work/slurmd.pid")" 2>/dev/null || true
  [ -f "$work/slurmctld.pid" ] && kill "$(cat "$work/slurmctld.pid")" 2>/dev/null || true
  [ -f "$work/munge/munged.pid" ] && kill "$(cat "$work/munge/munged.pid")" 2>/dev/null || true
}
trap stop EXIT
slurmctld -i
slurmd
for _ in $(seq 60); do
  sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && break
  sleep 1
done
sinfo

# The job array of deploy/slurm/extract-array.sbatch, pointed at this machine's paths.
start=$(date +%s%3N)
job=$(sbatch --parsable --array=0-$((shards - 1)) --cpus-per-task=1 --output="$work/logs/shard-%a.log" \
  --export=ALL,GRAFT_CACHE="$cache" --wrap \
  "exec '$xtask' extract --model minilm-l6-int8 --input '$input' --text-column text \
     --output '$work/out/parts' --chunk-rows $chunk_rows --shard \"\$SLURM_ARRAY_TASK_ID/$shards\" --threads 1 \
     --no-progress")
echo "submitted job array $job ($shards shards)"
while squeue -h -j "$job" 2>/dev/null | grep -q .; do sleep 2; done
states=$(sacct -n -X -j "$job" -o State 2>/dev/null | sort | uniq -c || true)
echo "array finished: ${states:-(no accounting)}"
"$xtask" merge "$work/out/parts" --output "$work/out/merged.parquet"
sharded_ms=$(( $(date +%s%3N) - start ))

start=$(date +%s%3N)
GRAFT_CACHE="$cache" "$xtask" extract --model minilm-l6-int8 --input "$input" --text-column text \
  --output "$work/out/single.parquet" --chunk-rows "$chunk_rows" --threads "$cpus" --no-progress
single_ms=$(( $(date +%s%3N) - start ))

a=$(sha256sum "$work/out/merged.parquet" | cut -d' ' -f1)
b=$(sha256sum "$work/out/single.parquet" | cut -d' ' -f1)
echo "sharded on Slurm ($shards tasks, submit to merged): ${sharded_ms} ms; one job: ${single_ms} ms"
if [ "$a" = "$b" ]; then
  echo "merged output identical to one unsharded job (sha256 $a)"
else
  echo "merged output differs from one unsharded job: $a vs $b" >&2
  exit 1
fi
