// parley's browser client: the protocol of docs/protocol.md over one
// WebSocket, with gap-free sync after every reconnect.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: localStorage.getItem("parley.token"),
  user: localStorage.getItem("parley.user"),
  ws: null, connected: false, backoff: 500, refs: 0, pending: new Map(),
  channels: new Map(), // id -> {id, kind, name, last, read, delivered, msgs: Map(seq->msg), oldest, peerRead, peerDelivered, members}
  current: null, presence: new Map(), typing: new Map(), outbox: new Map(), // key -> pending send
  lastTyping: 0,
};

// ---- protocol ----
function request(frame) {
  return new Promise((resolve, reject) => {
    if (!state.connected) return reject({ code: "unavailable", message: "not connected" });
    const ref = "r" + (++state.refs);
    state.pending.set(ref, { resolve, reject });
    state.ws.send(JSON.stringify({ ...frame, ref }));
  });
}
function fire(frame) { if (state.connected) state.ws.send(JSON.stringify(frame)); }

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws");
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token: state.token }));
  ws.onmessage = (e) => onFrame(JSON.parse(e.data));
  ws.onclose = (e) => {
    state.connected = false;
    for (const p of state.pending.values()) p.reject({ code: "unavailable", message: "connection lost" });
    state.pending.clear();
    setComposer();
    if (e.code === 4001) return logout("Your session expired: log in again.");
    $("banner").hidden = false;
    // Half the backoff and a random part of the other half: the pages of a
    // node that went away do not all come back in the same instant.
    setTimeout(connect, state.backoff / 2 + Math.random() * state.backoff / 2);
    state.backoff = Math.min(state.backoff * 2, 8000);
  };
}

async function onWelcome() {
  state.connected = true;
  state.backoff = 500;
  $("banner").hidden = true;
  setComposer();
  const { channels } = await request({ type: "channels" });
  for (const c of channels) upsertChannel(c);
  renderChannels();
  // Sync every channel we have seen from its last seq: nothing missed, nothing doubled.
  for (const ch of state.channels.values()) if (ch.msgs.size) await syncAfter(ch);
  if (state.current) await openChannel(state.current, true);
  watchPresence();
  for (const p of state.outbox.values()) sendPending(p); // retry unacknowledged sends with their keys
}

function onFrame(f) {
  if (f.type === "welcome") return onWelcome();
  if (f.ref && state.pending.has(f.ref)) {
    const p = state.pending.get(f.ref);
    state.pending.delete(f.ref);
    return f.type === "error" ? p.reject(f) : p.resolve(f);
  }
  switch (f.type) {
    case "message": return onMessage(f);
    case "receipt": return onReceipt(f);
    case "members": return onMembers(f);
    case "typing": return onTyping(f);
    case "presence": state.presence.set(f.user, f.online); renderChannels(); renderHeader(); return;
  }
}

// ---- channels and messages ----
function upsertChannel(c) {
  let ch = state.channels.get(c.channel);
  if (!ch) {
    ch = { id: c.channel, kind: c.kind, name: c.name, last: 0, read: 0, delivered: 0, msgs: new Map(), oldest: 0, peerRead: 0, peerDelivered: 0 };
    state.channels.set(c.channel, ch);
  }
  if (c.name) ch.name = c.name;
  if (c.kind) ch.kind = c.kind;
  ch.last = Math.max(ch.last, c.last_seq || 0);
  ch.read = Math.max(ch.read, c.read_seq || 0);
  ch.delivered = Math.max(ch.delivered, c.delivered_seq || 0);
  return ch;
}

function dmPeer(id) {
  const [, a, b] = id.split(":");
  return a === state.user ? b : a;
}

function channelFor(id) {
  return state.channels.get(id) || upsertChannel({ channel: id, kind: id.startsWith("dm:") ? "dm" : "group", name: id.startsWith("dm:") ? dmPeer(id) : id });
}

function addMessage(ch, m) {
  if (ch.msgs.has(m.seq)) return false;
  ch.msgs.set(m.seq, m);
  ch.last = Math.max(ch.last, m.seq);
  if (!ch.oldest || m.seq < ch.oldest) ch.oldest = m.seq;
  if (m.from === state.user) state.outbox.delete(m.key);
  return true;
}

async function onMessage(m) {
  const ch = channelFor(m.channel);
  const newest = Math.max(0, ...ch.msgs.keys());
  if (newest && m.seq > newest + 1) await syncAfter(ch); // a gap: history has the truth
  if (!addMessage(ch, m)) return;
  if (m.from !== state.user) {
    fire({ type: "receipt", channel: ch.id, seq: m.seq, status: "delivered" });
    ch.delivered = Math.max(ch.delivered, m.seq);
    state.typing.delete(ch.id + "/" + m.from);
  }
  renderChannels();
  if (state.current === ch.id) { renderMessages(true); markRead(); renderTyping(); }
}

async function syncAfter(ch) {
  let after = Math.max(0, ...ch.msgs.keys());
  for (;;) {
    const page = await request({ type: "history", channel: ch.id, after, limit: 200 });
    for (const m of page.messages) addMessage(ch, m);
    ch.last = Math.max(ch.last, page.last_seq);
    if (page.messages.length < 200) break;
    after = page.messages[page.messages.length - 1].seq;
  }
  if (state.current === ch.id) renderMessages(true);
}

async function openChannel(id, keepScroll) {
  const ch = channelFor(id);
  state.current = id;
  $("app").classList.add("in-chat");
  renderChannels();
  renderHeader();
  setComposer();
  renderMessages(!keepScroll);
  if (!state.connected) return;
  if (!ch.msgs.size) {
    const page = await request({ type: "history", channel: id, before: ch.last + 1 || 1, limit: 50 }).catch(() => null);
    if (page) { for (const m of page.messages) addMessage(ch, m); ch.last = Math.max(ch.last, page.last_seq); }
  } else {
    await syncAfter(ch);
  }
  await refreshTicks(ch);
  renderMessages(true);
  markRead();
}

async function loadOlder() {
  const ch = state.channels.get(state.current);
  if (!ch || !ch.oldest || ch.oldest <= 1 || ch.loading) return;
  ch.loading = true;
  const list = $("messages");
  const before = list.scrollHeight;
  const page = await request({ type: "history", channel: ch.id, before: ch.oldest, limit: 50 }).catch(() => null);
  ch.loading = false;
  if (!page) return;
  for (const m of page.messages) addMessage(ch, m);
  renderMessages(false);
  list.scrollTop = list.scrollHeight - before; // no jump: keep what was on screen in place
}

// refreshTicks learns how far the other members got, from a status of our
// newest message.
async function refreshTicks(ch) {
  const mine = [...ch.msgs.values()].filter((m) => m.from === state.user);
  if (!mine.length) return;
  const last = mine[mine.length - 1];
  const st = await request({ type: "status", channel: ch.id, seq: last.seq }).catch(() => null);
  if (!st) return;
  ch.members = st.members;
  if (ch.kind === "dm") {
    if (st.read) ch.peerRead = Math.max(ch.peerRead, last.seq);
    if (st.delivered) ch.peerDelivered = Math.max(ch.peerDelivered, last.seq);
  } else {
    last.readBy = st.read; last.deliveredBy = st.delivered;
  }
}

function onReceipt(r) {
  const ch = channelFor(r.channel);
  if (r.user === state.user) {
    if (r.status === "read") ch.read = Math.max(ch.read, r.seq);
    ch.delivered = Math.max(ch.delivered, r.seq);
    renderChannels();
    return;
  }
  if (r.status === "read") ch.peerRead = Math.max(ch.peerRead, r.seq);
  ch.peerDelivered = Math.max(ch.peerDelivered, r.seq);
  if (ch.kind === "group") {
    ch.receipts = ch.receipts || new Map();
    const cur = ch.receipts.get(r.user) || { read: 0, delivered: 0 };
    if (r.status === "read") cur.read = Math.max(cur.read, r.seq);
    cur.delivered = Math.max(cur.delivered, r.seq);
    ch.receipts.set(r.user, cur);
  }
  if (state.current === ch.id) renderMessages(false);
}

function onMembers(e) {
  const ch = channelFor(e.channel);
  if ((e.removed || []).includes(state.user)) {
    state.channels.delete(e.channel);
    if (state.current === e.channel) { state.current = null; renderHeader(); renderMessages(true); setComposer(); }
  } else if (state.connected) {
    request({ type: "channels" }).then(({ channels }) => { for (const c of channels) upsertChannel(c); renderChannels(); });
  }
  renderChannels();
  if (state.current === ch.id) renderHeader();
}

function onTyping(t) {
  const k = t.channel + "/" + t.user;
  state.typing.set(k, Date.now());
  renderTyping();
  setTimeout(() => { if (Date.now() - (state.typing.get(k) || 0) >= 4000) { state.typing.delete(k); renderTyping(); } }, 4100);
}

// markRead sends a read receipt once the newest message is on screen.
function markRead() {
  const ch = state.channels.get(state.current);
  if (!ch || document.hidden || !state.connected) return;
  const newest = Math.max(0, ...ch.msgs.keys());
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (newest > ch.read && atBottom) {
    ch.read = newest;
    fire({ type: "receipt", channel: ch.id, seq: newest, status: "read" });
    renderChannels();
  }
}

// ---- sending ----
function newKey() { return (crypto.randomUUID && crypto.randomUUID()) || String(Date.now()) + Math.random(); }

function sendPending(p) {
  request(p.frame).then((sent) => {
    state.outbox.delete(p.frame.key);
    const ch = channelFor(sent.channel);
    addMessage(ch, { type: "message", channel: sent.channel, seq: sent.seq, from: state.user, body: p.frame.body, ts: sent.ts, key: p.frame.key });
    if (state.current === ch.id) renderMessages(true);
    renderChannels();
  }).catch((e) => {
    if (e.code === "unavailable") return setTimeout(() => { if (state.connected) sendPending(p); }, 500); // same key: never a duplicate
    state.outbox.delete(p.frame.key);
    alert("Not sent: " + e.message);
    if (state.current) renderMessages(false);
  });
}

function send(body) {
  const ch = state.channels.get(state.current);
  if (!ch || !body.trim()) return;
  const frame = { type: "send", channel: ch.id, body, key: newKey() };
  const p = { frame, channel: ch.id };
  state.outbox.set(frame.key, p);
  renderMessages(true);
  sendPending(p);
}

// ---- rendering ----
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderChannels() {
  const ul = $("channels");
  ul.replaceChildren();
  const list = [...state.channels.values()].sort((a, b) => (b.lastTs || 0) - (a.lastTs || 0) || a.id.localeCompare(b.id));
  for (const ch of list) {
    const li = el("li", state.current === ch.id ? "active" : "");
    li.dataset.channel = ch.id;
    if (ch.kind === "dm") li.append(el("span", "dot" + (state.presence.get(dmPeer(ch.id)) ? " online" : "")));
    li.append(el("span", "name", ch.kind === "dm" ? dmPeer(ch.id) : "# " + (ch.name || ch.id)));
    const unread = Math.max(0, ch.last - ch.read);
    if (unread) li.append(el("span", "badge", String(unread)));
    li.onclick = () => openChannel(ch.id);
    ul.append(li);
  }
}

function renderHeader() {
  const ch = state.channels.get(state.current);
  $("title").textContent = ch ? (ch.kind === "dm" ? dmPeer(ch.id) : ch.name || ch.id) : "Pick a conversation";
  let sub = "";
  if (ch && ch.kind === "dm") sub = state.presence.get(dmPeer(ch.id)) ? "online" : "offline";
  if (ch && ch.kind === "group") sub = ch.id;
  $("subtitle").textContent = sub;
  $("group-actions").hidden = !ch || ch.kind !== "group";
}

function tickFor(ch, m) {
  if (ch.kind === "dm") {
    if (m.seq <= ch.peerRead) return ["✓✓", "tick read", "read"];
    if (m.seq <= ch.peerDelivered) return ["✓✓", "tick", "delivered"];
    return ["✓", "tick", "sent"];
  }
  const rs = ch.receipts ? [...ch.receipts.values()] : [];
  const read = Math.max(m.readBy || 0, rs.filter((r) => r.read >= m.seq).length);
  const delivered = Math.max(m.deliveredBy || 0, rs.filter((r) => r.delivered >= m.seq).length);
  if (!ch.members) return ["✓", "tick", "sent"];
  const others = Math.max(ch.members - 1, 1);
  if (read >= others) return ["✓✓", "tick read", `read by ${read} of ${others}`];
  if (delivered > 0) return ["✓✓", "tick", `read by ${read} of ${others}`];
  return ["✓", "tick", `read by ${read} of ${others}`];
}

function renderMessages(toBottom) {
  const list = $("messages");
  const ch = state.channels.get(state.current);
  list.replaceChildren();
  if (!ch) return;
  const msgs = [...ch.msgs.values()].sort((a, b) => a.seq - b.seq);
  for (const m of msgs) list.append(messageEl(ch, m));
  for (const p of state.outbox.values()) {
    if (p.channel !== ch.id) continue;
    const li = el("li", "msg mine pending");
    li.append(el("div", "body", p.frame.body), el("div", "meta", "sending…"));
    list.append(li);
  }
  if (msgs.length) ch.lastTs = msgs[msgs.length - 1].ts;
  if (toBottom) list.scrollTop = list.scrollHeight;
  // A group's size comes with a status reply: ask once it has our message.
  if (ch.kind === "group" && !ch.members && !ch.askedMembers && msgs.some((m) => m.from === state.user) && state.connected) {
    ch.askedMembers = true;
    refreshTicks(ch).then(() => { if (state.current === ch.id) renderMessages(false); });
  }
}

function messageEl(ch, m) {
  const mine = m.from === state.user;
  const li = el("li", "msg" + (mine ? " mine" : ""));
  li.dataset.seq = m.seq;
  if (!mine && ch.kind === "group") li.append(el("div", "from", m.from));
  li.append(el("div", "body", m.body));
  const meta = el("div", "meta", new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) + " ");
  if (mine) {
    const [text, cls, title] = tickFor(ch, m);
    const t = el("span", cls, text);
    t.title = title;
    t.dataset.status = title.startsWith("read by") ? title : title;
    meta.append(t);
    if (ch.kind === "group") li.onmouseenter = () => request({ type: "status", channel: ch.id, seq: m.seq }).then((st) => {
      m.readBy = st.read; m.deliveredBy = st.delivered; ch.members = st.members;
      t.title = `read by ${st.read} of ${st.members - 1}`;
    }).catch(() => {});
  }
  li.append(meta);
  return li;
}

function renderTyping() {
  const who = [...state.typing.keys()].filter((k) => k.startsWith(state.current + "/")).map((k) => k.split("/")[1]);
  $("typing").textContent = who.length ? who.join(", ") + (who.length > 1 ? " are" : " is") + " typing…" : "";
}

function setComposer() {
  const on = state.connected && !!state.current;
  $("body").disabled = !on;
  $("send").disabled = !on;
}

function watchPresence() {
  const users = [...state.channels.values()].filter((c) => c.kind === "dm").map((c) => dmPeer(c.id));
  if (!users.length) return;
  request({ type: "presence", users }).then((r) => {
    for (const [u, p] of Object.entries(r.users)) state.presence.set(u, p.online);
    renderChannels(); renderHeader();
  }).catch(() => {});
}

// ---- login ----
async function api(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw data.error || { message: "HTTP " + r.status };
  return data;
}

async function login(register) {
  const user = $("login-user").value.trim(), password = $("login-password").value;
  $("login-error").textContent = "";
  try {
    if (register) await api("/v1/register", { user, password });
    const { token } = await api("/v1/login", { user, password });
    state.token = token; state.user = user;
    localStorage.setItem("parley.token", token);
    localStorage.setItem("parley.user", user);
    start();
  } catch (e) {
    $("login-error").textContent = e.message || "failed";
  }
}

function logout(message) {
  localStorage.removeItem("parley.token");
  state.token = null;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = state.user;
  connect();
}

// ---- wiring ----
$("login-form").onsubmit = (e) => { e.preventDefault(); login(false); };
$("register-button").onclick = () => { if ($("login-form").reportValidity()) login(true); };
$("logout").onclick = () => logout();
$("back").onclick = () => $("app").classList.remove("in-chat");
$("new-dm").onsubmit = (e) => {
  e.preventDefault();
  const u = $("new-dm-user").value.trim().toLowerCase();
  if (!u || u === state.user) return;
  $("new-dm-user").value = "";
  const id = "dm:" + [state.user, u].sort().join(":");
  channelFor(id);
  openChannel(id);
  watchPresence();
};
$("new-group").onclick = async () => {
  const name = prompt("Group name");
  if (!name) return;
  const members = (prompt("Members (user ids, separated by spaces)") || "").split(/[\s,]+/).filter(Boolean);
  try {
    const g = await request({ type: "create_group", name, members });
    upsertChannel({ channel: g.channel, kind: "group", name: g.name });
    openChannel(g.channel);
  } catch (e) { alert(e.message); }
};
$("add-member").onclick = async () => {
  const m = (prompt("Add members (user ids)") || "").split(/[\s,]+/).filter(Boolean);
  if (m.length) request({ type: "add_members", channel: state.current, members: m }).catch((e) => alert(e.message));
};
$("remove-member").onclick = async () => {
  const m = (prompt("Remove members (user ids)") || "").split(/[\s,]+/).filter(Boolean);
  if (m.length) request({ type: "remove_members", channel: state.current, members: m }).catch((e) => alert(e.message));
};
$("leave").onclick = () => { if (confirm("Leave this group?")) request({ type: "leave", channel: state.current }).catch((e) => alert(e.message)); };
$("composer").onsubmit = (e) => { e.preventDefault(); send($("body").value); $("body").value = ""; };
$("body").onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
};
$("body").oninput = () => {
  if (Date.now() - state.lastTyping > 3000 && state.current) { state.lastTyping = Date.now(); fire({ type: "typing", channel: state.current }); }
};
$("messages").onscroll = () => { if ($("messages").scrollTop < 40) loadOlder(); markRead(); };
document.addEventListener("visibilitychange", markRead);
window.addEventListener("focus", markRead);

if (state.token && state.user) start(); else $("login").hidden = false;
