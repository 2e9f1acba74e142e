#!/usr/bin/env bash
# A local three-node cluster in the foreground: nodes n1, n2, n3 on 127.0.0.1,
# 127.0.0.2 and 127.0.0.3 (HTTP :8080, gossip :7946, peer :7947 each), data
# under ${CLUSTER_DATA:-./cluster-data}. Ctrl-C drains and stops all three.
# EXTRA_FLAGS are added to each node's serve command (e.g. --log-level debug).
set -euo pipefail
bin=${PARLEY:-./bin/parley}
data=${CLUSTER_DATA:-./cluster-data}
mkdir -p "$data"
# One secret for the cluster, made once and kept with the data.
[ -f "$data/secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$data/secret"
export PARLEY_AUTH_SECRET=$(cat "$data/secret")
pids=()
# Ctrl-C reaches the nodes themselves (one process group): they drain, we
# wait. A SIGTERM to this script is passed on. A second signal to a node
# stops it at once, so neither sends another.
trap 'echo "stopping the cluster..."; wait' INT
trap 'echo "stopping the cluster..."; kill -TERM "${pids[@]}" 2>/dev/null || true; wait' TERM
for i in 1 2 3; do
  host=127.0.0.$i
  "$bin" serve --node "n$i" --data "$data/n$i" --http "$host:8080" --gossip "$host:7946" \
    --peer "$host:7947" --join 127.0.0.1:7946,127.0.0.2:7946,127.0.0.3:7946 --bootstrap-expect 3 ${EXTRA_FLAGS:-} \
    > >(sed -u "s/^/n$i | /") 2>&1 &
  pids+=($!) # the node itself, not the sed that prefixes its lines
done
echo "cluster up: http://127.0.0.1:8080 http://127.0.0.2:8080 http://127.0.0.3:8080 (Ctrl-C stops it)"
wait
