"""Writes BENCHMARKS.md from the JSON results of scripts/bench.sh."""
import datetime, glob, json, os, platform, re, subprocess, sys

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
def errors(r):
    out = [f"{k}: {v}" for k, v in sorted(r["errors_by_code"].items())]
    if r.get("undelivered"):
        out.append(f"undelivered: {r['undelivered']}")
    return ", ".join(out) or "none"

rates = sorted(int(re.search(r"dm-(\d+)\.json$", p).group(1)) for p in glob.glob(os.path.join(out, "dm-*.json")))
cores = os.cpu_count()
mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
disk = subprocess.run(["df", "-h", "."], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
# The code the run was made on: the commit, and whether the tree differed
# from it (the two files this script writes do not count).
commit = git("rev-parse", "--short", "HEAD") or "an unknown commit"
if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md", ":!docs/bench-latency.svg"):
    commit += " with local changes"
print("# parley benchmarks\n")
print(f"Written by `make bench` (scripts/bench.sh) on {commit}, {datetime.date.today().isoformat()}:")
print("a three-node cluster on loopback (127.0.0.1-3, 64 shards, R=3, every ack after")
print("a synced quorum commit), the load tool on the same machine and the same cores.")
print("Rerun it to reproduce the tables on your box. The cluster runs with the default")
print("configuration except a raised per-user rate limit (the throughput run's senders")
print("each send hundreds a second). With the load tool and three nodes on the same")
print("cores, the loaded results vary from run to run, most on a shared VM:")
print("[docs/bench-history.md](docs/bench-history.md) lists every run on the project's")
print("two-core development VM, and what changed between them.\n")
print(f"Machine: {cores} cores, {mem} memory, {disk} disk, {platform.platform()}.\n")
mc = load("machine")
if mc:
    print(f"What it charged, measured before the run (`{cmd('machine')}`): a syscall {mc['syscall_ns']/1000:.2f} µs, a loopback TCP round trip {mc['loopback_round_trip_us']:.1f} µs ({mc['loopback_round_trip_cpu_us']:.1f} µs of CPU), a 1 KiB append and fdatasync {mc['append_fdatasync_p50_us']:.0f} µs at the median ({mc['append_fdatasync_cpu_us']:.0f} µs of CPU). Every message pays for several of each, so the loaded results move with these.\n")

# The targets, and where this run stands.
dm2k, tp, g5k, conns, idle, fo = load("dm-2000"), load("throughput"), load("group-5000"), load("conns"), load("idle"), load("failover")
print("## Against the targets\n")
print("| measure | result | target |")
print("|---|---|---|")
if dm2k:
    d = dm2k.get("delivery_ms")
    print(f"| DM delivery at 2,000/s offered, 1,000 users | p50 {lat(d)} ms, p99 {lat(d,'p99')} ms | p50 <= 3 ms, p99 <= 15 ms |")
if tp:
    print(f"| durable throughput, 64 senders | {tp['achieved_per_s']:.0f}/s acknowledged | >= 30,000/s |")
if g5k:
    print(f"| 5,000-member group, last member | p99 {lat(g5k.get('last_member_ms'),'p99')} ms | p99 <= 100 ms |")
if conns:
    print(f"| idle sessions on one node | {conns.get('sessions', 0)} at {conns.get('server_bytes_per_session', 0)/1024:.1f} KiB each | 19,000 at <= 16 KiB |")
if idle:
    print(f"| idle CPU, 3 nodes, 64 shards | {idle['idle_cpu_pct_of_one_core']}% of one core | <= 3% |")
if fo:
    print(f"| failover: leader killed -> next ack on its shards | {fo['ack_ms']['max']/1000:.2f} s (longest ack) | <= 3 s |")
print()

print("## Direct messages, 1,000 users in pairs, open loop\n")
print("![delivery latency percentiles against offered rate](docs/bench-latency.svg)\n")
print("| offered/s | achieved/s | ack p50 | ack p99 | delivery p50 | delivery p90 | delivery p99 | delivery p99.9 | max | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    r = load(f"dm-{rate}")
    if r:
        d = r.get("delivery_ms")
        print(f"| {rate} | {r['achieved_per_s']:.0f} | {lat(r.get('ack_ms'))} | {lat(r.get('ack_ms'),'p99')} | {lat(d)} | {lat(d,'p90')} | {lat(d,'p99')} | {lat(d,'p99.9')} | {lat(d,'max')} | {errors(r)} |")
print("\nLatencies in ms, from each send's scheduled time (no coordinated omission).\n")
if tp:
    print(f"## Durable throughput, {tp.get('senders', 64)} concurrent senders\n")
    print(f"Each sender is one session with {tp.get('window', 1)} sends in flight (the next goes when an ack comes back).\n")
    print(f"{tp['achieved_per_s']:.0f} messages/s acknowledged; ack p50 {lat(tp.get('ack_ms'))} ms, p99 {lat(tp.get('ack_ms'),'p99')} ms; errors: {errors(tp)}.\n")
print("## Groups, all members online across the 3 nodes, 1 message/s\n")
print("| members | median member p50 | median member p99 | last member p50 | last member p99 | max |")
print("|---|---|---|---|---|---|")
for m in (1000, 5000):
    r = load(f"group-{m}")
    if r:
        lm, md = r.get("last_member_ms"), r.get("median_member_ms")
        print(f"| {m} | {lat(md)} | {lat(md,'p99')} | {lat(lm)} | {lat(lm,'p99')} | {lat(lm,'max')} |")
hist = load("history")
if hist:
    f = hist.get("fetch_ms")
    print("\n## History reads\n")
    print(f"{hist.get('senders', 64)} sessions, each with its own conversation of 500 messages, fetch pages of 50 at random places, one at a time (on the cluster the runs above filled).\n")
    print(f"{hist['achieved_per_s']:.0f} pages/s ({hist.get('messages_read', 0)/max(hist['acked'], 1):.0f} messages a page on average); fetch p50 {lat(f)} ms, p99 {lat(f,'p99')} ms, max {lat(f,'max')} ms; errors: {errors(hist)}.")
if conns:
    print(f"\n## Idle sessions\n\n{conns.get('sessions', 0)} sessions held by one node of a fresh cluster: {conns.get('server_bytes_per_session', 0)/1024:.1f} KiB of server memory each (RSS growth / sessions); opened {conns.get('achieved_per_s', 0):.0f} a second, 64 at a time from each load process; errors: {errors(conns)}.\n")
if idle:
    print(f"## Idle cluster\n\n3 nodes, 64 shards, no traffic, 60 s from 15 s after the start (a node idle for 10 s runs on one thread, `process.idle_after`): {idle['idle_cpu_pct_of_one_core']}% of one core (user + system time of the three processes).\n")
if fo:
    led = (load("failover-led") or {}).get("shards_led", "?")
    a = fo["ack_ms"]
    print("## Failover\n")
    print(f"200 users on n2 and n3 send 200 DMs/s; 8 s in, n1 (leading {led} of the 64 shards) is SIGKILLed.")
    print(f"Sends to its shards wait, the client retrying with the same key, until a new leader commits them.")
    print(f"Longest ack: {a['max']/1000:.2f} s (p99.9 {a['p99.9']:.0f} ms, p99 {a['p99']:.0f} ms); {fo['acked']} acknowledged, errors: {errors(fo)}.\n")
failures = []
for path in sorted(glob.glob(os.path.join(out, "*.err"))):
    name = os.path.basename(path)[:-4]
    if load(name) is None:
        lines = [l for l in open(path).read().splitlines() if l.strip()]
        failures.append((name, lines[-1] if lines else "no message"))
if failures:
    print("## Failed steps\n")
    for name, why in failures:
        print(f"- {name} (`{cmd(name)}`): {why}")
    print()
print("## Commands\n")
for name in ["machine"] + [f"dm-{r}" for r in rates] + ["throughput", "group-1000", "group-5000", "history", "conns", "failover"]:
    if cmd(name):
        print(f"    {cmd(name)}")
