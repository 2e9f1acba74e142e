#!/usr/bin/env bash
# make bench: a local three-node cluster (scripts/cluster.sh), the standard
# parley bench suite against it, and BENCHMARKS.md written from the results.
# Takes about eight minutes. Results of each run also land in bench-results/.
set -euo pipefail
bin=./bin/parley
out=bench-results
rm -rf "$out" # results of an earlier run must not pass for this one's
mkdir -p "$out"
# The throughput run's 64 senders each send hundreds of messages a second,
# far past the default per-user limit ([limits] rate 50/s): raise it.
start_cluster() {
  data=$(mktemp -d)
  PARLEY_LIMITS_RATE=100000 PARLEY_LIMITS_BURST=100000 CLUSTER_DATA=$data ./scripts/cluster.sh >> "$out/cluster.log" 2>&1 &
  cluster=$!
  for i in $(seq 100); do
    curl -sf http://127.0.0.1:8080/readyz >/dev/null && curl -sf http://127.0.0.3:8080/readyz >/dev/null && break
    sleep 0.2
  done
  export PARLEY_AUTH_SECRET=$(cat "$data/secret")
  # Formation leaves the shards' leaders uneven (29/16/19 of 64 seen); the
  # nodes then hand leaders over, one a second each, until the counts are
  # within one of each other. Measure only after that: a hand-over during a run
  # would cost its shard a round trip of refused sends.
  for i in $(seq 300); do
    leads=$(for host in 127.0.0.1 127.0.0.2 127.0.0.3; do
      curl -sf "http://$host:8080/v1/status" | python3 -c 'import json,sys; print(sum(s["state"] == "Leader" for s in json.load(sys.stdin)["shards"]))' || echo 0
    done | sort -n | tr '\n' ' ')
    read -r low _ high <<< "$leads"
    [ $((high - low)) -le 1 ] && break
    sleep 0.2
  done
  echo "leaders per node: $leads" >> "$out/cluster.log"
}
# cluster.sh passes SIGTERM on to its nodes, which drain and exit.
stop_cluster() { kill -TERM "$cluster" 2>/dev/null || true; wait "$cluster" 2>/dev/null || true; rm -rf "$data"; }
trap stop_cluster EXIT
# The suite starts its own cluster on 127.0.0.1-3: one already there (make
# cluster, an earlier run) would answer instead, or take the ports.
for host in 127.0.0.1 127.0.0.2 127.0.0.3; do
  if curl -s -o /dev/null --max-time 2 "http://$host:8080/"; then
    echo "bench: something already listens on $host:8080 (a running cluster?); stop it first" >&2
    trap - EXIT
    exit 1
  fi
done
# A step that fails leaves its error in $out/<name>.err and the suite goes
# on: BENCHMARKS.md lists the failed steps, and make bench fails at the end.
failed=0
# What this machine charges for a syscall, a loopback round trip and a
# synced append, before the cluster starts: every message pays for several
# of each, so BENCHMARKS.md gives them with the machine, and two boxes' (or
# two VM builds') tables can be told apart by them.
echo "parley bench machine" > "$out/machine.cmd"
if ! "$bin" bench --json machine > "$out/machine.json" 2> "$out/machine.err"; then
  cat "$out/machine.err" >&2
  rm -f "$out/machine.json"
  failed=1
fi
: > "$out/cluster.log"
start_cluster
S=http://127.0.0.1:8080,http://127.0.0.2:8080,http://127.0.0.3:8080
run() { # name, args...
  local name=$1; shift
  echo "== $name: parley bench $*" >&2
  echo "parley bench $*" > "$out/$name.cmd"
  if ! "$bin" bench --json "$@" > "$out/$name.json" 2> >(tee "$out/$name.err" >&2); then
    rm -f "$out/$name.json"
    failed=1
  elif errs=$(python3 -c 'import json,sys; e = json.load(open(sys.argv[1])).get("errors_by_code"); print(e or "")' "$out/$name.json") && [ -n "$errs" ]; then
    # Numbers over failed sends or undelivered messages are not a result
    # (a bug once closed a group's sessions ten seconds into its run):
    # they stay in the tables, and make bench fails.
    echo "bench: $name had errors: $errs" >&2
    failed=1
  fi
}
# Idle CPU first, on a cluster that has done nothing, once it has settled
# (process.idle_after, 10 s, puts an idle node on one thread).
sleep 15
pids=$(pgrep -f "parley serve --node n" | tr '\n' ' ')
ticks() { for p in $pids; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd+ | bc; }
t0=$(ticks); sleep 60; t1=$(ticks)
echo "{\"idle_cpu_pct_of_one_core\": $(echo "scale=2; ($t1-$t0)/60" | bc)}" > "$out/idle.json"
for rate in 250 500 1000 1500 2000; do
  run dm-$rate --servers $S --users 1000 --rate $rate --duration 15s dm
done
run throughput --servers $S --senders 64 --window 16 --duration 20s throughput
run group-1000 --servers $S --members 1000 --rate 1 --duration 20s group
run group-5000 --servers $S --members 5000 --rate 1 --duration 20s group
run history --servers $S --senders 64 --fill 500 --duration 15s history
# Session memory on a fresh cluster: the runs before grew the nodes' heaps,
# and RSS growth on top of that understates what a session costs.
stop_cluster
start_cluster
run conns --servers http://127.0.0.1:8080 --conns 19000 conns
# Failover, last: users on n2 and n3 only, and 8 s into the run n1 (leading
# about a third of the shards) is SIGKILLed. A send to one of its shards
# waits (the client retries with the same key) until a new leader commits
# it: the longest ack is the failover time as clients see it.
led=$(curl -s http://127.0.0.1:8080/v1/status | python3 -c 'import json,sys; print(sum(s["state"] == "Leader" for s in json.load(sys.stdin)["shards"]))')
echo "{\"shards_led\": $led}" > "$out/failover-led.json"
(sleep 8; pkill -KILL -f "parley serve --node n1 ") &
run failover --servers http://127.0.0.2:8080,http://127.0.0.3:8080 --users 200 --rate 200 --duration 20s dm
python3 scripts/latency_svg.py "$out" > docs/bench-latency.svg
python3 scripts/benchmarks_md.py "$out" > BENCHMARKS.md
echo "wrote BENCHMARKS.md" >&2
if [ "$failed" = 1 ]; then
  echo "bench: some steps failed or had errors (see above; BENCHMARKS.md lists the failed ones)" >&2
  exit 1
fi
