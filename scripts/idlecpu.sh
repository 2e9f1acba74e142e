#!/usr/bin/env bash
# What an idle cluster costs: starts a fresh local three-node cluster
# (scripts/cluster.sh, data in a temporary directory), waits until its
# shards' leaders are balanced and WARM seconds more (default 20: an idle
# node goes down to one thread after process.idle_after), then prints, for
# each of N windows of HOLD seconds (defaults 3 and 10), the three nodes'
# CPU as a percentage of one core and their context switches a second.
# Interleave two binaries to compare them: the VM's speed drifts.
#
#   scripts/idlecpu.sh [BIN [N]]      e.g. scripts/idlecpu.sh ./bin/parley 6
#
# Extra environment for the nodes (PARLEY_* settings) passes through.
set -euo pipefail
bin=${1:-./bin/parley}
n=${2:-3}
warm=${WARM:-20}
hold=${HOLD:-10}
cd "$(dirname "$0")/.."
for host in 127.0.0.1 127.0.0.2 127.0.0.3; do
  if curl -s -o /dev/null --max-time 2 "http://$host:8080/"; then
    echo "idlecpu: something already listens on $host:8080 (a running cluster?); stop it first" >&2
    exit 1
  fi
done
data=$(mktemp -d)
PARLEY=$bin CLUSTER_DATA=$data ./scripts/cluster.sh > "$data/cluster.log" 2>&1 &
cluster=$!
trap 'kill -TERM $cluster 2>/dev/null || true; wait $cluster 2>/dev/null || true; rm -rf "$data"' EXIT
for i in $(seq 150); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null && curl -sf http://127.0.0.3:8080/readyz >/dev/null && break
  sleep 0.2
done
leaders() {
  for host in 127.0.0.1 127.0.0.2 127.0.0.3; do
    curl -sf "http://$host:8080/v1/status" | python3 -c 'import json,sys; print(sum(s["state"] == "Leader" for s in json.load(sys.stdin)["shards"]))' || echo 0
  done | sort -n | tr '\n' ' '
}
for i in $(seq 300); do
  read -r low _ high <<< "$(leaders)"
  [ $((high - low)) -le 1 ] && break
  sleep 0.2
done
echo "leaders per node: $(leaders)"
sleep "$warm"
pids=$(pgrep -f "serve --node n" | tr '\n' ' ')
ticks() { for p in $pids; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd+ | bc; }
# (a thread that ends between the glob and the read is skipped)
switches() { { for p in $pids; do cat /proc/$p/task/*/status; done 2>/dev/null || true; } | awk '/ctxt_switches/ {s += $2} END {print s}'; }
for w in $(seq "$n"); do
  t0=$(ticks); c0=$(switches)
  sleep "$hold"
  t1=$(ticks); c1=$(switches)
  echo "$(basename "$bin"): $(echo "scale=2; ($t1 - $t0) / $hold" | bc)% of a core, $(( (c1 - c0) / hold )) context switches a second"
done
