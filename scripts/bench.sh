#!/usr/bin/env bash
# make bench: a local three-node cluster (scripts/cluster.sh), the standard
# parley bench suite against it, and BENCHMARKS.md written from the results.
# Takes about three minutes. Results of each run also land in bench-results/.
set -euo pipefail
bin=./bin/parley
data=$(mktemp -d)
out=bench-results
mkdir -p "$out"
CLUSTER_DATA=$data ./scripts/cluster.sh > "$out/cluster.log" 2>&1 &
cluster=$!
# cluster.sh passes SIGTERM on to its nodes, which drain and exit.
stop_cluster() { kill -TERM "$cluster" 2>/dev/null || true; wait "$cluster" 2>/dev/null || true; rm -rf "$data"; }
trap stop_cluster EXIT
for i in $(seq 100); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null && curl -sf http://127.0.0.3:8080/readyz >/dev/null && break
  sleep 0.2
done
export PARLEY_AUTH_SECRET=$(cat "$data/secret")
S=http://127.0.0.1:8080,http://127.0.0.2:8080,http://127.0.0.3:8080
run() { # name, args...
  local name=$1; shift
  echo "== $name: parley bench $*" >&2
  "$bin" bench --json "$@" > "$out/$name.json"
  echo "parley bench $*" > "$out/$name.cmd"
}
# Idle CPU first, on a cluster that has done nothing.
sleep 10
pids=$(pgrep -f "parley serve --node n" | tr '\n' ' ')
ticks() { for p in $pids; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd+ | bc; }
t0=$(ticks); sleep 30; t1=$(ticks)
echo "{\"idle_cpu_pct_of_one_core\": $(echo "scale=2; ($t1-$t0)/30" | bc)}" > "$out/idle.json"
for rate in 500 1000 2000; do
  run dm-$rate --servers $S --users 1000 --rate $rate --duration 20s dm
done
run throughput --servers $S --senders 64 --duration 20s throughput
run group-1000 --servers $S --members 1000 --rate 1 --duration 20s group
run group-5000 --servers $S --members 5000 --rate 1 --duration 20s group
run conns --servers http://127.0.0.1:8080 --conns 10000 conns
python3 scripts/benchmarks_md.py "$out" > BENCHMARKS.md
echo "wrote BENCHMARKS.md" >&2
