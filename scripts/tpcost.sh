#!/usr/bin/env bash
# What an acked send costs: runs `parley bench throughput` for 10 s against
# a running local cluster (scripts/cluster.sh, or make cluster) and prints,
# per acked send, the CPU and the read and write syscalls of the three nodes
# together and of the load tool. The tool's figures are sampled every 0.2 s
# from /proc while it runs (its connecting phase is mostly left out).
#
#   PARLEY=./bin/parley CLUSTER_DATA=./cluster-data scripts/tpcost.sh
#
# WINDOW (default 16) is the sends each sender keeps in flight.
set -euo pipefail
bin=${PARLEY:-./bin/parley}
data=${CLUSTER_DATA:-./cluster-data}
export PARLEY_AUTH_SECRET=$(cat "$data/secret")
servers=http://127.0.0.1:8080,http://127.0.0.2:8080,http://127.0.0.3:8080
nodes=$(pgrep -f "serve --node" | tr '\n' ' ')
[ -n "$nodes" ] || { echo "tpcost: no running nodes (start scripts/cluster.sh first)" >&2; exit 1; }

# io PIDS: read and write syscalls so far, summed; cpu PIDS: CPU ticks.
io() { local r=0 w=0 p; for p in "$@"; do
  r=$((r + $(awk '/^syscr/{print $2}' /proc/$p/io))); w=$((w + $(awk '/^syscw/{print $2}' /proc/$p/io))); done; echo $r $w; }
cpu() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }

read nr0 nw0 < <(io $nodes); nc0=$(cpu $nodes)
out=$(mktemp)
"$bin" bench --servers $servers --senders 64 --window "${WINDOW:-16}" --duration 10s throughput > "$out" 2>&1 &
tool=$!
sleep 0.5
read tr0 tw0 < <(io $tool); tc0=$(cpu $tool)
tr=$tr0; tw=$tw0; tc=$tc0
while sample=$(io $tool 2>/dev/null) && ticks=$(cpu $tool 2>/dev/null); do
  read tr tw <<< "$sample"; tc=$ticks; sleep 0.2
done
wait $tool || { cat "$out"; exit 1; }
read nr1 nw1 < <(io $nodes); nc1=$(cpu $nodes)
acked=$(grep achieved "$out" | grep -o 'acked [0-9]*' | cut -d' ' -f2)
grep achieved "$out"
rm -f "$out"
hz=$(getconf CLK_TCK)
awk -v n="$acked" -v hz="$hz" -v nr=$((nr1 - nr0)) -v nw=$((nw1 - nw0)) -v nc=$((nc1 - nc0)) \
  -v tr=$((tr - tr0)) -v tw=$((tw - tw0)) -v tc=$((tc - tc0)) 'BEGIN {
  printf "per acked send: nodes %.1f us CPU, %.2f reads, %.2f writes; tool %.1f us CPU, %.2f reads, %.2f writes\n",
    nc * 1e6 / hz / n, nr / n, nw / n, tc * 1e6 / hz / n, tr / n, tw / n }'
