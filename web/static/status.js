"use strict";
let previous = null; // the last sample, for rates
function fmtLatency(p) { return p ? `p50 ${p.p50} ms, p90 ${p.p90} ms, p99 ${p.p99} ms` : "none yet"; }
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.append(td); }
async function refresh() {
  try {
    const st = await (await fetch("/v1/status")).json();
    const n = st.node;
    document.getElementById("node").textContent = n.name + " " + n.version;
    document.getElementById("summary").textContent =
      `ready: ${n.ready} · up ${n.uptime_s}s · http ${n.http} · peer ${n.peer} · gossip ${n.gossip} · data ${(n.data_bytes / 1048576).toFixed(1)} MiB`;
    const s = st.sessions;
    document.getElementById("sessions").textContent =
      `${s.sessions} sessions of ${s.users} users · frames delivered ${s.frames_delivered} · slow-consumer closes ${s.slow_consumer_closes} · write-timeout closes ${s.write_timeout_closes} · idle closes ${s.idle_closes} · rate-limited ${s.rate_limited}`;
    const t = st.traffic, now = Date.now();
    const sent = (t.sends_by_result.sent || 0) + (t.sends_by_result.duplicate || 0);
    let rates = "";
    if (previous) {
      const dt = (now - previous.at) / 1000;
      rates = ` · ${((sent - previous.sent) / dt).toFixed(1)} sends/s, ${((t.deliveries - previous.deliveries) / dt).toFixed(1)} deliveries/s`;
    }
    previous = { at: now, sent, deliveries: t.deliveries };
    const errors = Object.entries(t.sends_by_result).filter(([k]) => k !== "sent" && k !== "duplicate").map(([k, v]) => `${k} ${v}`).join(", ") || "none";
    document.getElementById("traffic").textContent =
      `${sent} sends, ${t.deliveries} deliveries${rates} · ack ${fmtLatency(t.ack_latency_ms)} · delivery ${fmtLatency(t.delivery_latency_ms)} · errors by code: ${errors}`;
    const mb = document.querySelector("#members tbody");
    mb.replaceChildren();
    for (const m of st.members) {
      const tr = document.createElement("tr");
      cell(tr, m.name); cell(tr, m.state, m.state === "alive" ? "ok" : "bad"); cell(tr, m.http); cell(tr, m.peer);
      mb.append(tr);
    }
    const sb = document.querySelector("#shards tbody");
    sb.replaceChildren();
    for (const sh of st.shards) {
      const tr = document.createElement("tr");
      cell(tr, sh.shard); cell(tr, sh.leader || "none", sh.leader ? "" : "bad"); cell(tr, (sh.voters || []).join(" "));
      cell(tr, sh.term); cell(tr, sh.commit_index); cell(tr, sh.applied_index);
      cell(tr, sh.first_index ? sh.last_index - sh.first_index + 1 : 0);
      cell(tr, sh.follower_lag ? Object.entries(sh.follower_lag).map(([k, v]) => `${k}:${v}`).join(" ") : "");
      sb.append(tr);
    }
  } catch (e) {
    document.getElementById("summary").textContent = "status unavailable: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
