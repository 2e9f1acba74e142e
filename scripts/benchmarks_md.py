"""Writes BENCHMARKS.md from the JSON results of scripts/bench.sh."""
import json, os, platform, subprocess, sys

out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def cmd(name):
    try:
        return open(os.path.join(out, name + ".cmd")).read().strip()
    except OSError:
        return ""
def lat(l, key="p50"):
    return "-" if not l else "%.1f" % l.get(key, 0)

cores = os.cpu_count()
mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
disk = subprocess.run(["df", "-h", "."], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
print("# parley benchmarks\n")
print("Written by `make bench` (scripts/bench.sh): a three-node cluster on loopback")
print("(127.0.0.1-3, R=3, every ack after a synced quorum commit), the load tool on")
print("the same machine. Rerun it to reproduce the tables on your box.\n")
print(f"Machine: {cores} cores, {mem} memory, {disk} disk, {platform.platform()}.\n")
print("## Direct messages, 1,000 users in pairs, open loop\n")
print("| offered/s | achieved/s | ack p50 | ack p99 | delivery p50 | delivery p90 | delivery p99 | delivery p99.9 | max | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rate in (500, 1000, 2000):
    r = load(f"dm-{rate}")
    if r:
        d = r.get("delivery_ms")
        print(f"| {rate} | {r['achieved_per_s']:.0f} | {lat(r.get('ack_ms'))} | {lat(r.get('ack_ms'),'p99')} | {lat(d)} | {lat(d,'p90')} | {lat(d,'p99')} | {lat(d,'p99.9')} | {lat(d,'max')} | {r['errors_by_code'] or 'none'} |")
print("\nLatencies in ms, from each send's scheduled time.\n")
r = load("throughput")
if r:
    print("## Durable throughput, 64 concurrent senders\n")
    print(f"{r['achieved_per_s']:.0f} messages/s acknowledged; ack p50 {lat(r.get('ack_ms'))} ms, p99 {lat(r.get('ack_ms'),'p99')} ms.\n")
print("## Groups, all members online across the 3 nodes, 1 message/s\n")
print("| members | median member p50 | median member p99 | last member p50 | last member p99 | max |")
print("|---|---|---|---|---|---|")
for m in (1000, 5000):
    r = load(f"group-{m}")
    if r:
        lm, md = r.get("last_member_ms"), r.get("median_member_ms")
        print(f"| {m} | {lat(md)} | {lat(md,'p99')} | {lat(lm)} | {lat(lm,'p99')} | {lat(lm,'max')} |")
r = load("conns")
if r:
    print(f"\n## Idle sessions\n\n{r.get('sessions', 0)} sessions held by one node: {r.get('server_bytes_per_session', 0)/1024:.1f} KiB of server memory each (RSS growth / sessions).\n")
r = load("idle")
if r:
    print(f"## Idle cluster\n\n3 nodes, 64 shards, no traffic: {r['idle_cpu_pct_of_one_core']}% of one core.\n")
print("## Commands\n")
for name in ("dm-500", "dm-1000", "dm-2000", "throughput", "group-1000", "group-5000", "conns"):
    if cmd(name):
        print(f"    {cmd(name)}")
