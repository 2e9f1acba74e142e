// Package conn serves parley's client protocol (PROTOCOL.md): WebSocket
// sessions at /v1/ws and the HTTP API. A Hub keeps this node's sessions,
// delivers committed events to them and tracks presence.
package conn

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/channel"
)

// Options are the limits of sessions.
type Options struct {
	NodeID          string
	MaxFrame        int      // bytes of one client frame; larger closes the session
	SendQueue       int      // frames queued for a session before it counts as slow
	SessionsPerUser int      // live sessions one user may hold on this node
	Rate            float64  // requests per second per user
	Burst           int      // requests a user may make at once
	Origins         []string // allowed Origin host patterns besides same-origin
	HelloTimeout    time.Duration
	IdleTimeout     time.Duration // a session with no frame or pong for this long is dead
	PingInterval    time.Duration
	WriteTimeout    time.Duration

	// Busy, if set, is called for every frame a session reads and every
	// burst it writes: the node has work (see internal/idleprocs).
	Busy func()
}

// DefaultOptions are PROTOCOL.md's timers and modest limits.
func DefaultOptions() Options {
	return Options{MaxFrame: 256 << 10, SendQueue: 256, SessionsPerUser: 16, Rate: 50, Burst: 100,
		HelloTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, PingInterval: 10 * time.Second,
		WriteTimeout: 10 * time.Second}
}

// Stats are the hub's counters, for the status page and metrics.
type Stats struct {
	Sessions      int   `json:"sessions"`
	Users         int   `json:"users"`
	SlowCloses    int64 `json:"slow_consumer_closes"`
	WriteTimeouts int64 `json:"write_timeout_closes"`
	IdleCloses    int64 `json:"idle_closes"`
	RateLimited   int64 `json:"rate_limited"`
	Delivered     int64 `json:"frames_delivered"`
	PeerDrops     int64 `json:"peer_drops"`
	WebhookSent   int64 `json:"webhook_sent"`
	WebhookFailed int64 `json:"webhook_failed"`
	EventsPending int   `json:"events_pending"`
}

// Hub is this node's set of sessions.
type Hub struct {
	svc    *channel.Service
	issuer *auth.Issuer
	opt    Options
	log    *slog.Logger

	mu       sync.Mutex // guards users, watchers, lastSeen, pingSets, closed
	users    map[string]*userState
	watchers map[string]map[*Session]struct{} // user -> sessions that asked for their presence
	lastSeen map[string]int64                 // ms, when each user's last session ended
	pingSets [pingSlots]map[*Session]struct{} // the sessions of each ping slot
	closed   bool

	events  chan []channel.Event // committed events, in commit order per shard
	members *memberCache         // owned by the dispatcher goroutine

	metrics *Metrics // nil: no metrics
	hook    *webhook // nil: no webhook
	cluster Cluster  // nil for a hub on its own (tests of a lone node)
	dir     directory

	dirMu      sync.Mutex // guards dirPending, dirSent
	dirPending map[string]dirChange
	dirSent    chan struct{} // closed once the deltas gathering now are posted; nil when none are
	dirPoke    chan struct{}
	dirWant    chan string // nodes that asked for this node's full list
	dirEpoch   uint64

	slowCloses, writeTimeouts, idleCloses, rateLimited, delivered, peerDrops atomic.Int64

	sessions sync.WaitGroup
	pingSeq  atomic.Uint32  // spreads sessions over the ping slots
	wg       sync.WaitGroup // background goroutines but the dispatcher
	stop     chan struct{}
	done     chan struct{}
}

type userState struct {
	sessions map[*Session]struct{}
	limiter  *rate.Limiter
}

// NewHub returns a hub and starts its dispatcher; Close stops it.
func NewHub(svc *channel.Service, issuer *auth.Issuer, opt Options, log *slog.Logger) *Hub {
	h := &Hub{svc: svc, issuer: issuer, opt: opt, log: log,
		users: map[string]*userState{}, watchers: map[string]map[*Session]struct{}{}, lastSeen: map[string]int64{},
		events: make(chan []channel.Event, 4096), members: newMemberCache(svc),
		dir:     newDirectory(),
		dirPoke: make(chan struct{}, 1), dirWant: make(chan string, 64), dirEpoch: newEpoch(),
		stop: make(chan struct{}), done: make(chan struct{})}
	for i := range h.pingSets {
		h.pingSets[i] = map[*Session]struct{}{}
	}
	go h.dispatch()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.pingLoop()
	}()
	return h
}

// busy tells the configured Busy hook that the node has work.
func (h *Hub) busy() {
	if h.opt.Busy != nil {
		h.opt.Busy()
	}
}

// OnCommit takes a committed entry's events from the state machine. Only
// the shard's leader dispatches them. It runs on a shard's apply goroutine;
// when the dispatcher is far behind it blocks, which slows commits rather
// than dropping pushes.
func (h *Hub) OnCommit(shard int, evs []channel.Event) {
	if !h.leads(shard) {
		return
	}
	select {
	case h.events <- evs:
	case <-h.stop:
	}
}

func (h *Hub) dispatch() {
	defer close(h.done)
	for {
		select {
		case evs := <-h.events:
			for _, ev := range evs {
				h.deliverEvent(ev)
			}
		case <-h.stop:
			return
		}
	}
}

// maxReceiptFanout is the largest group whose receipts are pushed.
const maxReceiptFanout = 256

func (h *Hub) deliverEvent(ev channel.Event) {
	switch {
	case ev.Message != nil:
		members := h.members.get(ev.Message.Channel)
		h.deliverAt(members, encode(newMessageFrame(ev.Message)), ev.Message.Ts)
		h.notifyOffline(ev.Message, members)
	case ev.Members != nil:
		m := ev.Members
		h.members.change(m.Channel, m.Added, m.Removed)
		frame := encode(membersFrame{Type: "members", Channel: m.Channel, Added: orEmpty(m.Added), Removed: orEmpty(m.Removed)})
		h.deliver(append(h.members.get(m.Channel), m.Removed...), frame)
	case ev.Receipt != nil:
		r := ev.Receipt
		members := h.members.get(r.Channel)
		if len(members) <= maxReceiptFanout {
			h.deliver(members, encode(receiptFrame{Type: "receipt", Channel: r.Channel, User: r.User, Status: r.Status, Seq: r.Seq}))
		}
	}
}

// deliver writes frame to the sessions of users here and on other nodes.
func (h *Hub) deliver(users []string, frame []byte) { h.deliverAt(users, frame, 0) }

// deliverAt is deliver for a message committed at ts (ms), for the latency metric.
// Other nodes get theirs first: they write to their sessions while this
// node writes to its own.
func (h *Hub) deliverAt(users []string, frame []byte, ts int64) {
	h.forward(users, frame, ts)
	h.deliverLocal(users, frame, "", ts)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// deliverLocal queues frame on every local session of users, except those
// of the user skip. It never blocks: a full queue closes that session.
func (h *Hub) deliverLocal(users []string, frame []byte, skip string, ts int64) {
	// The sessions with no writer running, which this call must start: on
	// the stack for a DM's few.
	var some [4]*Session
	idle := some[:0]
	h.mu.Lock()
	for _, u := range users {
		if u == skip {
			continue
		}
		if us := h.users[u]; us != nil {
			for s := range us.sessions {
				if s.queue(outFrame{b: frame, ts: ts}) {
					idle = append(idle, s)
				}
			}
		}
	}
	h.mu.Unlock()
	if len(idle) < fanOutAtOnce {
		for _, s := range idle {
			go s.writeQueued() // ends when the queue empties or the socket fails
		}
		return
	}
	// A copy: handing idle itself to a goroutine would move some to the
	// heap on every call, a DM's included.
	go writeAll(slices.Clone(idle))
}

// fanOutAtOnce is how many sessions a frame must start writers for to
// have them written by one goroutine, in turn. A writer goroutine each
// (each yielding once, to gather a burst) cost a 5,000-member group's
// fan-out more in scheduling than in its writes. With one goroutine the
// median member got a message in 51-55 ms instead of 69-70 and the last
// in 82-88 instead of 91-97 (p50), 94-114 instead of 103-120 (p99)
// (`parley bench group --members 5000`, three interleaved pairs of fresh
// clusters). Below this, as for a DM, the writers' yield gathers more
// into a write.
const fanOutAtOnce = 16

// writeAll writes the queued frames of each session in turn, without
// waiting on any socket (Session.writeNow).
func writeAll(sessions []*Session) {
	for _, s := range sessions {
		s.writeNow()
	}
}

// SetMetrics makes the hub report to m.
func (h *Hub) SetMetrics(m *Metrics) { h.metrics = m }

// register adds a session after its hello; false when the user holds too
// many sessions already or the hub is closing.
func (h *Hub) register(s *Session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	us := h.users[s.user]
	if us == nil {
		us = &userState{sessions: map[*Session]struct{}{}, limiter: rate.NewLimiter(rate.Limit(h.opt.Rate), h.opt.Burst)}
		h.users[s.user] = us
	}
	if len(us.sessions) >= h.opt.SessionsPerUser {
		return false
	}
	us.sessions[s] = struct{}{}
	h.pingSets[s.pingSlot][s] = struct{}{}
	s.limiter = us.limiter
	h.sessions.Add(1)
	if len(us.sessions) == 1 {
		h.directoryDelta(s.user, true)
		if !h.dir.online(s.user) {
			h.notifyPresence(s.user, true, time.Now().UnixMilli())
		}
	}
	return true
}

// unregister removes a session; the user goes offline with its last one.
func (h *Hub) unregister(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for u := range s.watching {
		delete(h.watchers[u], s)
		if len(h.watchers[u]) == 0 {
			delete(h.watchers, u)
		}
	}
	us := h.users[s.user]
	if us == nil {
		return
	}
	if _, ok := us.sessions[s]; !ok {
		return
	}
	delete(us.sessions, s)
	delete(h.pingSets[s.pingSlot], s)
	h.sessions.Done()
	if len(us.sessions) == 0 {
		delete(h.users, s.user)
		h.directoryDelta(s.user, false)
		if !h.dir.online(s.user) {
			now := time.Now().UnixMilli()
			h.lastSeen[s.user] = now
			h.notifyPresence(s.user, false, now)
		}
	}
}

// presenceChanged tells local watchers of user its state after a change on
// another node.
func (h *Hub) presenceChanged(user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now().UnixMilli()
	online := h.users[user] != nil || h.dir.online(user)
	if !online {
		h.lastSeen[user] = now
	}
	h.notifyPresence(user, online, now)
}

// notifyPresence tells the watchers of user. Caller holds h.mu.
func (h *Hub) notifyPresence(user string, online bool, at int64) {
	if len(h.watchers[user]) == 0 {
		return
	}
	frame := encode(presenceFrame{Type: "presence", User: user, Online: online, LastSeen: at})
	for s := range h.watchers[user] {
		s.enqueue(frame)
	}
}

// watch subscribes s to the presence of users and returns their state now.
func (h *Hub) watch(s *Session, users []string) map[string]presenceState {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]presenceState, len(users))
	now := time.Now().UnixMilli()
	for _, u := range users {
		if h.watchers[u] == nil {
			h.watchers[u] = map[*Session]struct{}{}
		}
		h.watchers[u][s] = struct{}{}
		s.watching[u] = struct{}{}
		if h.users[u] != nil || h.dir.online(u) {
			out[u] = presenceState{Online: true, LastSeen: now}
		} else {
			out[u] = presenceState{LastSeen: h.lastSeen[u]}
		}
	}
	return out
}

// allSessions lists this node's live sessions.
func (h *Hub) allSessions() []*Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []*Session
	for _, us := range h.users {
		for s := range us.sessions {
			all = append(all, s)
		}
	}
	return all
}

// pingSet lists the live sessions of one ping slot.
func (h *Hub) pingSet(slot uint32) []*Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Session, 0, len(h.pingSets[slot]))
	for s := range h.pingSets[slot] {
		out = append(out, s)
	}
	return out
}

// pingSlots spreads the pings over PingInterval: each session is in one
// slot, and each tick pings one slot. Pinging every session at once put a
// node's whole set of pings and pongs (thousands of writes and reads) in
// the way of the messages of that moment.
const pingSlots = 20

// pingLoop checks every session's liveness each PingInterval: one ticker
// for the node instead of one per session.
func (h *Hub) pingLoop() {
	t := time.NewTicker(h.opt.PingInterval / pingSlots)
	defer t.Stop()
	for slot := uint32(0); ; slot = (slot + 1) % pingSlots {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		for _, s := range h.pingSet(slot) {
			s.ping()
		}
	}
}

// Stats reports the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	st := Stats{Users: len(h.users)}
	for _, us := range h.users {
		st.Sessions += len(us.sessions)
	}
	h.mu.Unlock()
	st.SlowCloses = h.slowCloses.Load()
	st.WriteTimeouts = h.writeTimeouts.Load()
	st.IdleCloses = h.idleCloses.Load()
	st.RateLimited = h.rateLimited.Load()
	st.Delivered = h.delivered.Load()
	st.PeerDrops = h.peerDrops.Load()
	if h.hook != nil {
		st.WebhookSent, st.WebhookFailed = h.hook.sent.Load(), h.hook.failed.Load()
	}
	st.EventsPending = len(h.events)
	return st
}

// SessionsOf lists the session ids of a user on this node.
func (h *Hub) SessionsOf(user string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	if us := h.users[user]; us != nil {
		for s := range us.sessions {
			out = append(out, s.id)
		}
	}
	return out
}

// Close refuses new sessions, closes every live one with code (4010 tells
// clients to reconnect, possibly to another node), waits for them to end
// or ctx, and stops the dispatcher.
func (h *Hub) Close(ctx context.Context, code int, reason string) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.mu.Unlock()
	for _, s := range h.allSessions() {
		s.closeWith(code, reason)
	}
	waited := make(chan struct{})
	go func() {
		h.sessions.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	close(h.stop)
	<-h.done
	h.wg.Wait()
}

// memberCache keeps group member lists for delivery. Only the dispatcher
// goroutine uses it; membership events keep it current.
type memberCache struct {
	svc    *channel.Service
	groups map[string]map[string]struct{}
}

// maxCachedGroups bounds the cache; past it the cache starts over.
const maxCachedGroups = 10000

func newMemberCache(svc *channel.Service) *memberCache {
	return &memberCache{svc: svc, groups: map[string]map[string]struct{}{}}
}

// get returns a channel's members: a DM's two users, or a group's from the
// cache or the service.
func (c *memberCache) get(ch string) []string {
	if a, b, ok := channel.ParseDM(ch); ok {
		return []string{a, b}
	}
	set, ok := c.groups[ch]
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		members, err := c.svc.MembersOf(ctx, ch)
		cancel()
		if err != nil {
			return nil // pushes are best effort; history has the message
		}
		if len(c.groups) >= maxCachedGroups {
			clear(c.groups)
		}
		set = make(map[string]struct{}, len(members))
		for _, m := range members {
			set[m] = struct{}{}
		}
		c.groups[ch] = set
	}
	out := make([]string, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	return out
}

// change applies a membership event to a cached group.
func (c *memberCache) change(ch string, added, removed []string) {
	set, ok := c.groups[ch]
	if !ok {
		return
	}
	for _, u := range added {
		set[u] = struct{}{}
	}
	for _, u := range removed {
		delete(set, u)
	}
}
