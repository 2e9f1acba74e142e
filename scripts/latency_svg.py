"""Draws delivery latency percentiles against offered rate as an SVG.

usage: latency_svg.py RESULTS_DIR > plot.svg, from the dm-RATE.json files
that scripts/bench.sh writes. No plotting library: the SVG is written by hand.
"""
import glob, json, math, os, re, sys

points = []
for path in glob.glob(os.path.join(sys.argv[1], "dm-*.json")):
    m = re.search(r"dm-(\d+)\.json$", path)
    with open(path) as f:
        r = json.load(f)
    d = r.get("delivery_ms")
    if m and d:
        points.append((int(m.group(1)), d))
points.sort()

W, H, L, R, T, B = 640, 400, 70, 150, 30, 50  # size and margins
lo, hi = 0.1, 10000.0  # ms, log scale
xmax = max([p[0] for p in points] + [1]) * 1.1
def x(rate): return L + (W - L - R) * rate / xmax
def y(ms): return T + (H - T - B) * (1 - (math.log10(max(ms, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="18" font-size="14">parley: DM delivery latency vs offered rate (3 nodes, R=3)</text>']
for ms in (0.1, 1, 10, 100, 1000, 10000):
    out.append(f'<line x1="{L}" x2="{W-R}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{L-8}" y="{y(ms)+4:.1f}" text-anchor="end">{ms:g}</text>')
step = 500 if xmax > 1500 else 250
for rate in range(0, int(xmax) + 1, step):
    out.append(f'<line x1="{x(rate):.1f}" x2="{x(rate):.1f}" y1="{T}" y2="{H-B}" stroke="#eee"/>')
    out.append(f'<text x="{x(rate):.1f}" y="{H-B+18}" text-anchor="middle">{rate}</text>')
out.append(f'<text x="{(L+W-R)/2}" y="{H-10}" text-anchor="middle">offered messages/s</text>')
out.append(f'<text x="16" y="{(T+H-B)/2}" text-anchor="middle" transform="rotate(-90 16 {(T+H-B)/2})">delivery latency, ms (log)</text>')
series = [("p50", "#1f77b4"), ("p90", "#2ca02c"), ("p99", "#d62728"), ("p99.9", "#9467bd")]
for i, (name, color) in enumerate(series):
    pts = [(x(rate), y(d.get(name, 0))) for rate, d in points]
    if pts:
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
    out.append(f'<line x1="{W-R+15}" x2="{W-R+35}" y1="{T+20+i*20}" y2="{T+20+i*20}" stroke="{color}" stroke-width="2"/>')
    out.append(f'<text x="{W-R+40}" y="{T+24+i*20}">{name}</text>')
# The targets at 2,000/s: p50 <= 3 ms, p99 <= 15 ms.
for ms, label in ((3, "target p50"), (15, "target p99")):
    out.append(f'<text x="{x(2000):.1f}" y="{y(ms)+4:.1f}" text-anchor="middle" fill="#555">&#215;</text>')
    out.append(f'<text x="{W-R+15}" y="{T+24+(len(series)+(ms==15))*20}" fill="#555">&#215; {label}</text>')
out.append("</svg>")
print("\n".join(out))
