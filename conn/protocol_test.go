package conn_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/conn"
	"github.com/parleychat/parley/internal/testutil"
)

func TestHelloRequired(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.HelloTimeout = config.Duration{Duration: 200 * time.Millisecond} })
	cases := map[string]func(w *ws){
		"bad token":       func(w *ws) { w.send(frame{"type": "hello", "token": "nope"}) },
		"missing token":   func(w *ws) { w.send(frame{"type": "hello"}) },
		"other frame":     func(w *ws) { w.send(frame{"type": "ping", "ref": "1"}) },
		"no hello":        func(w *ws) {},
		"foreign secret":  func(w *ws) { w.send(frame{"type": "hello", "token": foreignToken(t)}) },
		"invalid JSON":    func(w *ws) { w.sendRaw([]byte("{")) },
		"expired (valid)": func(w *ws) { w.send(frame{"type": "hello", "token": expiredToken(t, e)}) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			w := e.dialRaw(nil)
			f(w)
			if code := w.closeCode(); code != conn.CloseUnauthorized {
				t.Fatalf("close code %d, want 4001", code)
			}
		})
	}
}

func TestPing(t *testing.T) {
	e := newEnv(t)
	w := e.dial("alice")
	f := w.ok(frame{"type": "ping"}, "pong")
	if f["ref"] == nil {
		t.Fatal("pong without ref")
	}
	w.ok(frame{"type": "hello", "token": e.token("alice")}, "error") // a second hello is refused, session stays
	w.ok(frame{"type": "ping"}, "pong")
}

func TestSendDeliversToEverySession(t *testing.T) {
	e := newEnv(t)
	a1, a2, b := e.dial("alice"), e.dial("alice"), e.dial("bob")
	carol := e.dial("carol")
	sent := a1.ok(frame{"type": "send", "to": "bob", "body": "hi bob", "key": "k1"}, "sent")
	if sent["channel"] != "dm:alice:bob" || num(sent, "seq") != 1 || sent["duplicate"] != false || num(sent, "ts") == 0 {
		t.Fatalf("sent %v", sent)
	}
	for name, w := range map[string]*ws{"sender's session": a1, "sender's other session": a2, "recipient": b} {
		m := w.event("message")
		if m["channel"] != "dm:alice:bob" || num(m, "seq") != 1 || m["from"] != "alice" || m["body"] != "hi bob" ||
			m["key"] != "k1" || num(m, "ts") != num(sent, "ts") {
			t.Fatalf("%s got %v", name, m)
		}
	}
	carol.quiet(100 * time.Millisecond)

	// With "channel" instead of "to", and a retry with the same key.
	s2 := b.ok(frame{"type": "send", "channel": "dm:alice:bob", "body": "hi alice", "key": "k1"}, "sent")
	if num(s2, "seq") != 2 || s2["duplicate"] != false {
		t.Fatalf("bob's send %v (same key, other sender: a new message)", s2)
	}
	dup := a1.ok(frame{"type": "send", "to": "bob", "body": "hi bob", "key": "k1"}, "sent")
	if dup["duplicate"] != true || num(dup, "seq") != 1 || num(dup, "ts") != num(sent, "ts") {
		t.Fatalf("duplicate %v", dup)
	}
	// Bob reconnects: the key still holds (it is in the replicated state).
	b2 := e.dial("alice")
	dup2 := b2.ok(frame{"type": "send", "channel": "dm:alice:bob", "body": "changed body", "key": "k1"}, "sent")
	if dup2["duplicate"] != true || num(dup2, "seq") != 1 {
		t.Fatalf("duplicate across sessions %v", dup2)
	}
}

func TestSendErrors(t *testing.T) {
	e := newEnv(t)
	w := e.dial("alice")
	body := strings.Repeat("é", 2049) // 4098 bytes
	cases := []struct {
		name string
		req  frame
		code string
	}{
		{"missing key", frame{"type": "send", "to": "bob", "body": "x"}, "bad_request"},
		{"missing body", frame{"type": "send", "to": "bob", "key": "k"}, "bad_request"},
		{"empty body", frame{"type": "send", "to": "bob", "body": "", "key": "k"}, "bad_request"},
		{"missing target", frame{"type": "send", "body": "x", "key": "k"}, "bad_request"},
		{"both targets", frame{"type": "send", "to": "bob", "channel": "dm:alice:bob", "body": "x", "key": "k"}, "bad_request"},
		{"oversized body", frame{"type": "send", "to": "bob", "body": body, "key": "k"}, "too_large"},
		{"key too long", frame{"type": "send", "to": "bob", "body": "x", "key": strings.Repeat("k", 129)}, "bad_request"},
		{"bad user", frame{"type": "send", "to": "Bob", "body": "x", "key": "k"}, "bad_request"},
		{"to self", frame{"type": "send", "to": "alice", "body": "x", "key": "k"}, "bad_request"},
		{"unknown group", frame{"type": "send", "channel": "g:nope", "body": "x", "key": "k"}, "not_found"},
		{"bad channel id", frame{"type": "send", "channel": "lobby", "body": "x", "key": "k"}, "bad_request"},
		{"unsorted dm", frame{"type": "send", "channel": "dm:bob:alice", "body": "x", "key": "k"}, "bad_request"},
		{"someone else's dm", frame{"type": "send", "channel": "dm:bob:carol", "body": "x", "key": "k"}, "forbidden"},
		{"body of wrong type", frame{"type": "send", "to": "bob", "body": 5, "key": "k"}, "bad_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := w.fails(c.req, c.code)
			_ = f
		})
	}
	// Exactly 4096 bytes is fine.
	w.ok(frame{"type": "send", "to": "bob", "body": strings.Repeat("x", 4096), "key": "max"}, "sent")
}

func TestBadFramesKeepSessionOpen(t *testing.T) {
	e := newEnv(t)
	w := e.dial("alice")
	bad := []struct {
		name string
		raw  string
	}{
		{"invalid JSON", `{"type":"ping"`},
		{"not an object", `[1,2]`},
		{"unknown type", `{"type":"dance","ref":"x"}`},
		{"missing type", `{"ref":"x"}`},
		{"invalid UTF-8", "{\"type\":\"send\",\"to\":\"bob\",\"body\":\"\xff\",\"key\":\"k\",\"ref\":\"x\"}"},
		{"ref too long", `{"type":"ping","ref":"` + strings.Repeat("r", 65) + `"}`},
		{"history limit 0", `{"type":"history","channel":"dm:alice:bob","limit":0,"ref":"x"}`},
		{"history limit 1001", `{"type":"history","channel":"dm:alice:bob","limit":1001,"ref":"x"}`},
		{"history after and before", `{"type":"history","channel":"dm:alice:bob","after":1,"before":3,"ref":"x"}`},
		{"negative seq", `{"type":"receipt","channel":"dm:alice:bob","seq":-1,"status":"read","ref":"x"}`},
		{"receipt without seq", `{"type":"receipt","channel":"dm:alice:bob","status":"read","ref":"x"}`},
		{"receipt bad status", `{"type":"receipt","channel":"dm:alice:bob","seq":1,"status":"seen","ref":"x"}`},
		{"presence without users", `{"type":"presence","ref":"x"}`},
		{"add without members", `{"type":"add_members","channel":"g:x","ref":"x"}`},
		{"create without name", `{"type":"create_group","ref":"x"}`},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			w.sendRaw([]byte(b.raw))
			f := w.expect("error")
			if f["code"] != "bad_request" {
				t.Fatalf("%v", f)
			}
			if strings.Contains(b.raw, `"ref":"x"`) && f["ref"] != "x" {
				t.Fatalf("error lost the ref: %v", f)
			}
		})
	}
	if err := w.c.Write(t.Context(), websocket.MessageBinary, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if f := w.expect("error"); f["code"] != "bad_request" {
		t.Fatalf("binary frame: %v", f)
	}
	w.ok(frame{"type": "ping"}, "pong") // still open
}

func TestOversizedFrameClosesSession(t *testing.T) {
	e := newEnv(t)
	w := e.dial("alice")
	w.sendRaw([]byte(`{"type":"send","to":"bob","key":"k","body":"` + strings.Repeat("x", 300<<10) + `"}`))
	if code := w.closeCode(); code != websocket.StatusMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	e.dial("alice").ok(frame{"type": "ping"}, "pong") // the node is fine
}

func TestGroups(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol, dave := e.dial("alice"), e.dial("bob"), e.dial("carol"), e.dial("dave")
	g := alice.ok(frame{"type": "create_group", "name": "team", "members": []string{"bob", "carol"}}, "group")
	ch := g["channel"].(string)
	if !strings.HasPrefix(ch, "g:") || g["name"] != "team" || !slices.Equal(strs(g["members"]), []string{"alice", "bob", "carol"}) {
		t.Fatalf("group %v", g)
	}
	for _, w := range []*ws{bob, carol} {
		if ev := w.event("members"); ev["channel"] != ch || len(strs(ev["added"])) != 3 {
			t.Fatalf("members event %v", ev)
		}
	}
	bob.ok(frame{"type": "send", "channel": ch, "body": "hello team", "key": "1"}, "sent")
	for _, w := range []*ws{alice, bob, carol} {
		if m := w.event("message"); m["body"] != "hello team" {
			t.Fatalf("%v", m)
		}
	}
	dave.fails(frame{"type": "send", "channel": ch, "body": "let me in", "key": "1"}, "forbidden")
	dave.fails(frame{"type": "history", "channel": ch}, "forbidden")
	dave.fails(frame{"type": "add_members", "channel": ch, "members": []string{"dave"}}, "forbidden")
	dave.fails(frame{"type": "history", "channel": "g:nothere"}, "not_found")

	// Any member adds; old and new members hear of it.
	bob.ok(frame{"type": "add_members", "channel": ch, "members": []string{"dave"}}, "ok")
	for _, w := range []*ws{alice, carol, dave} {
		if ev := w.event("members"); !slices.Equal(strs(ev["added"]), []string{"dave"}) || len(strs(ev["removed"])) != 0 {
			t.Fatalf("add event %v", ev)
		}
	}
	// Only the owner removes others.
	bob.fails(frame{"type": "remove_members", "channel": ch, "members": []string{"carol"}}, "forbidden")
	alice.ok(frame{"type": "remove_members", "channel": ch, "members": []string{"carol"}}, "ok")
	if ev := carol.event("members"); !slices.Equal(strs(ev["removed"]), []string{"carol"}) {
		t.Fatalf("the removed member's event %v", ev)
	}
	carol.fails(frame{"type": "send", "channel": ch, "body": "x", "key": "2"}, "forbidden")
	// The owner leaves; bob, the longest-standing member, owns the group.
	alice.ok(frame{"type": "leave", "channel": ch}, "ok")
	bob.event("members")
	bob.ok(frame{"type": "remove_members", "channel": ch, "members": []string{"dave"}}, "ok")
	alice.fails(frame{"type": "leave", "channel": ch}, "forbidden")
	alice.fails(frame{"type": "leave", "channel": "dm:alice:bob"}, "bad_request")
	alice.fails(frame{"type": "add_members", "channel": "dm:alice:bob", "members": []string{"carol"}}, "bad_request")
}

func TestGroupSizeLimit(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.MaxGroup = 3 })
	w := e.dial("alice")
	w.fails(frame{"type": "create_group", "name": "big", "members": []string{"b", "c", "d"}}, "too_large")
	g := w.ok(frame{"type": "create_group", "name": "ok", "members": []string{"b", "c"}}, "group")
	w.fails(frame{"type": "add_members", "channel": g["channel"], "members": []string{"d"}}, "too_large")
}

// The largest group the protocol allows can be made in one frame, with
// user ids of the longest length.
func TestLargestGroupInOneFrame(t *testing.T) {
	e := newEnv(t)
	w := e.dial("alice")
	members := make([]string, 4999) // and alice: the default max_group, 5000
	for i := range members {
		members[i] = fmt.Sprintf("%032d", i)
	}
	g := w.ok(frame{"type": "create_group", "name": "everyone", "members": members}, "group")
	if got := len(strs(g["members"])); got != 5000 {
		t.Fatalf("the group has %d members, want 5000", got)
	}
}

func TestChannelsAndHistory(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.dial("alice"), e.dial("bob")
	for i := range 60 {
		alice.ok(frame{"type": "send", "to": "bob", "body": "m", "key": string(rune('A' + i))}, "sent")
	}
	g := bob.ok(frame{"type": "create_group", "name": "pair", "members": []string{"alice"}}, "group")
	bob.ok(frame{"type": "receipt", "channel": "dm:alice:bob", "seq": 7, "status": "read"}, "ok")

	list := bob.ok(frame{"type": "channels"}, "channels")["channels"].([]any)
	if len(list) != 2 {
		t.Fatalf("channels %v", list)
	}
	byID := map[string]map[string]any{}
	for _, c := range list {
		m := c.(map[string]any)
		byID[m["channel"].(string)] = m
	}
	dm, grp := byID["dm:alice:bob"], byID[g["channel"].(string)]
	if dm["kind"] != "dm" || num(dm, "last_seq") != 60 || num(dm, "read_seq") != 7 || num(dm, "delivered_seq") != 7 {
		t.Fatalf("dm entry %v", dm)
	}
	if grp["kind"] != "group" || grp["name"] != "pair" || num(grp, "last_seq") != 0 {
		t.Fatalf("group entry %v", grp)
	}

	page := func(req frame) []uint64 {
		req["type"], req["channel"] = "history", "dm:alice:bob"
		f := bob.ok(req, "messages")
		if f["channel"] != "dm:alice:bob" || num(f, "last_seq") != 60 {
			t.Fatalf("history reply %v", f)
		}
		var seqs []uint64
		for _, m := range f["messages"].([]any) {
			seqs = append(seqs, num(m.(map[string]any), "seq"))
		}
		return seqs
	}
	if s := page(frame{"after": 0}); len(s) != 50 || s[0] != 1 || s[49] != 50 {
		t.Fatalf("default page %v", s)
	}
	if s := page(frame{"after": 55, "limit": 10}); !slices.Equal(s, []uint64{56, 57, 58, 59, 60}) {
		t.Fatalf("after 55: %v", s)
	}
	if s := page(frame{"before": 10, "limit": 3}); !slices.Equal(s, []uint64{7, 8, 9}) {
		t.Fatalf("before 10: %v", s)
	}
	if s := page(frame{"before": 1}); len(s) != 0 {
		t.Fatalf("before 1: %v", s)
	}
	if s := page(frame{"after": 60}); len(s) != 0 {
		t.Fatalf("after the last: %v", s)
	}
	// A DM with no messages yet: empty, last_seq 0.
	f := bob.ok(frame{"type": "history", "channel": "dm:bob:carol"}, "messages")
	if len(f["messages"].([]any)) != 0 || num(f, "last_seq") != 0 {
		t.Fatalf("empty dm %v", f)
	}
}

func TestReceipts(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.dial("alice"), e.dial("bob")
	alice.ok(frame{"type": "send", "to": "bob", "body": "1", "key": "1"}, "sent")
	alice.ok(frame{"type": "send", "to": "bob", "body": "2", "key": "2"}, "sent")
	// Without ref: no reply, but the event goes out.
	bob.send(frame{"type": "receipt", "channel": "dm:alice:bob", "seq": 2, "status": "delivered"})
	ev := alice.event("receipt")
	if ev["user"] != "bob" || ev["status"] != "delivered" || num(ev, "seq") != 2 || ev["channel"] != "dm:alice:bob" {
		t.Fatalf("receipt event %v", ev)
	}
	bob.ok(frame{"type": "receipt", "channel": "dm:alice:bob", "seq": 1, "status": "read"}, "ok")
	if ev := alice.event("receipt"); ev["status"] != "read" || num(ev, "seq") != 1 {
		t.Fatalf("read event %v", ev)
	}
	// Lower than stored: accepted, nothing changes, no event.
	bob.ok(frame{"type": "receipt", "channel": "dm:alice:bob", "seq": 1, "status": "delivered"}, "ok")
	st := alice.ok(frame{"type": "status", "channel": "dm:alice:bob", "seq": 2}, "status")
	if num(st, "members") != 2 || num(st, "delivered") != 1 || num(st, "read") != 0 ||
		!slices.Equal(strs(st["delivered_by"]), []string{"bob"}) || len(st["read_by"].([]any)) != 0 {
		t.Fatalf("status of 2: %v", st)
	}
	st = alice.ok(frame{"type": "status", "channel": "dm:alice:bob", "seq": 1}, "status")
	if num(st, "read") != 1 || !slices.Equal(strs(st["read_by"]), []string{"bob"}) {
		t.Fatalf("status of 1: %v", st)
	}
	alice.fails(frame{"type": "status", "channel": "dm:alice:bob", "seq": 3}, "not_found")
	e.dial("carol").fails(frame{"type": "status", "channel": "dm:alice:bob", "seq": 1}, "forbidden")
}

func TestTypingAndPresence(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.dial("alice"), e.dial("bob")
	p := alice.ok(frame{"type": "presence", "users": []string{"bob", "carol"}}, "presence")
	users := p["users"].(map[string]any)
	if users["bob"].(map[string]any)["online"] != true || users["carol"].(map[string]any)["online"] != false {
		t.Fatalf("presence %v", p)
	}
	bob.send(frame{"type": "typing", "channel": "dm:alice:bob"})
	if ev := alice.event("typing"); ev["user"] != "bob" || ev["channel"] != "dm:alice:bob" {
		t.Fatalf("typing %v", ev)
	}
	bob.quiet(100 * time.Millisecond) // not to the typist
	carol := e.dial("carol")
	if ev := alice.event("presence"); ev["user"] != "carol" || ev["online"] != true {
		t.Fatalf("presence event %v", ev)
	}
	carol.c.Close(websocket.StatusNormalClosure, "")
	ev := alice.event("presence")
	if ev["user"] != "carol" || ev["online"] != false || num(ev, "last_seen") == 0 {
		t.Fatalf("offline event %v", ev)
	}
	bob.send(frame{"type": "typing", "channel": "dm:carol:dave", "ref": "t"})
	if f := bob.expect("error"); f["code"] != "forbidden" {
		t.Fatalf("typing in someone else's dm: %v", f)
	}
}

func TestRateLimited(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.Rate, c.Limits.Burst = 1, 3 })
	w := e.dial("alice")
	limited := 0
	for i := range 10 {
		f := w.call(frame{"type": "channels", "n": i})
		if f["type"] == "error" && f["code"] == "rate_limited" {
			limited++
		}
	}
	if limited < 5 {
		t.Fatalf("only %d of 10 requests were limited with burst 3", limited)
	}
	w.ok(frame{"type": "ping"}, "pong") // pings are not limited; the session is open
}

func TestTooManySessions(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.SessionsPerUser = 2 })
	e.dial("alice")
	e.dial("alice")
	w := e.dialRaw(nil)
	w.send(frame{"type": "hello", "token": e.token("alice")})
	if code := w.closeCode(); code != conn.CloseTooManySession {
		t.Fatalf("close code %d, want %d", code, conn.CloseTooManySession)
	}
}

func TestIdleSessionIsClosed(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.IdleTimeout = config.Duration{Duration: 300 * time.Millisecond} })
	w := e.dialSilent(nil)
	w.send(frame{"type": "hello", "token": e.token("alice")})
	testutil.Eventually(t, 5*time.Second, func() error {
		if len(e.srv.Hub.SessionsOf("alice")) != 1 {
			return fmt.Errorf("the session did not start")
		}
		return nil
	})
	// This client reads nothing, so it answers no pings: the server must
	// give up on it. (The close frame it sends cannot be relied on to be
	// read: the client's pong to the queued pings fails first.)
	testutil.Eventually(t, 15*time.Second, func() error {
		if n := len(e.srv.Hub.SessionsOf("alice")); n != 0 {
			return fmt.Errorf("%d sessions still live", n)
		}
		return nil
	})
	if st := e.srv.Hub.Stats(); st.IdleCloses != 1 {
		t.Fatalf("idle closes %d", st.IdleCloses)
	}
	// A client that keeps reading stays: pongs count as life.
	live := e.dial("bob")
	time.Sleep(time.Second) // three idle timeouts: the time is the point of this check
	live.ok(frame{"type": "ping"}, "pong")
}

// The server pings only sessions it has not heard from lately: a client
// that keeps sending gets no pings, a quiet one (that reads) gets them and
// stays.
func TestOnlyQuietSessionsArePinged(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.IdleTimeout = config.Duration{Duration: 600 * time.Millisecond} }) // pings every 200 ms
	dial := func(user string, pings *atomic.Int32) *ws {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+e.srv.HTTPAddr()+"/v1/ws", &websocket.DialOptions{
			OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		w := &ws{t: t, c: c}
		w.startReader()
		w.send(frame{"type": "hello", "token": e.token(user)})
		w.expect("welcome")
		return w
	}
	var activePings, quietPings atomic.Int32
	active := dial("alice", &activePings)
	quiet := dial("bob", &quietPings)
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		active.ok(frame{"type": "ping"}, "pong")
		time.Sleep(20 * time.Millisecond) // the pace of the sender is the point here
	}
	if n := quietPings.Load(); n < 5 {
		t.Fatalf("the quiet session got %d pings in 1.5 s of 200 ms intervals", n)
	}
	if n := activePings.Load(); n > 1 {
		t.Fatalf("a session that sent every 20 ms got %d pings", n)
	}
	t.Logf("pings: quiet %d, active %d", quietPings.Load(), activePings.Load())
	quiet.ok(frame{"type": "ping"}, "pong") // pongs kept it alive
}

func foreignToken(t *testing.T) string {
	tok, _, err := auth.NewIssuer([]byte("some other cluster's secret"), time.Hour).Mint("alice")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func expiredToken(t *testing.T, e *env) string {
	tok, _, err := auth.NewIssuer([]byte(e.cfg.Auth.Secret), -time.Minute).Mint("alice")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// floodBob has alice send bob 4 KB messages until done holds, failing with
// why after 40 MB, far past any socket buffer.
func floodBob(t *testing.T, alice *ws, done func() bool, why string) {
	t.Helper()
	body := strings.Repeat("x", 4096)
	for i := 0; !done(); i++ {
		if i == 10000 {
			t.Fatal(why)
		}
		alice.ok(frame{"type": "send", "to": "bob", "body": body, "key": fmt.Sprint(i)}, "sent")
		alice.event("message")
	}
}

func TestSlowConsumerIsClosed(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Limits.SendQueue = 64 })
	slow := e.dialSilent(nil) // reads nothing: the kernel buffers fill, then its queue
	slow.send(frame{"type": "hello", "token": e.token("bob")})
	alice := e.dial("alice")
	floodBob(t, alice, func() bool { return e.srv.Hub.Stats().SlowCloses > 0 }, "no slow consumer was cut off")
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(e.srv.Hub.SessionsOf("bob")); n != 0 {
			return fmt.Errorf("the slow session is still live")
		}
		return nil
	})
	// Alice, who reads, was never slowed down or cut off.
	if st := e.srv.Hub.Stats(); st.SlowCloses != 1 {
		t.Fatalf("slow closes %d, want 1 (bob)", st.SlowCloses)
	}
	alice.ok(frame{"type": "ping"}, "pong")
}

// A client that stops reading, with room left in its send queue, is closed
// once a write to it has made no progress for write_timeout, and counted.
func TestStalledClientIsClosedAfterWriteTimeout(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Limits.SendQueue = 1 << 20 // never full: the write, not the queue, gives up
		c.Limits.WriteTimeout = config.Duration{Duration: 300 * time.Millisecond}
	})
	stalled := e.dialSilent(nil) // reads nothing: the kernel buffers fill, then a write blocks
	stalled.send(frame{"type": "hello", "token": e.token("bob")})
	alice := e.dial("alice")
	floodBob(t, alice, func() bool { return e.srv.Hub.Stats().WriteTimeouts > 0 }, "the stalled session was not closed")
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(e.srv.Hub.SessionsOf("bob")); n != 0 {
			return fmt.Errorf("the stalled session is still live")
		}
		return nil
	})
	if st := e.srv.Hub.Stats(); st.WriteTimeouts != 1 || st.SlowCloses != 0 {
		t.Fatalf("write timeouts %d, slow closes %d; want 1 and 0", st.WriteTimeouts, st.SlowCloses)
	}
	alice.ok(frame{"type": "ping"}, "pong")
}

// A frame for many sessions is written to them by one goroutine in turn,
// which must never wait on a socket: a member that stops reading does not
// hold up the others, and once it reads it gets every message, in order.
func TestFanOutPassesAStalledMember(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Limits.Rate, c.Limits.Burst = 1e6, 1e6
		c.Limits.SendQueue = 1 << 20                                   // never full
		c.Limits.WriteTimeout = config.Duration{Duration: time.Minute} // never given up
	})
	stalled := e.dialSilent(nil) // reads nothing: its socket fills, then its queue grows
	stalled.send(frame{"type": "hello", "token": e.token("bob")})
	alice := e.dial("alice")
	var names []string
	var readers []*ws
	for i := range 20 { // more sessions than one goroutine writes to in turn (fanOutAtOnce)
		names = append(names, fmt.Sprintf("m%d", i))
		readers = append(readers, e.dial(names[i]))
	}
	ch := alice.ok(frame{"type": "create_group", "name": "big", "members": append([]string{"bob"}, names...)}, "group")["channel"].(string)
	// Each reader takes the group's messages as they come, and checks
	// that their seqs follow each other.
	var last uint64 // the last message's seq; only this goroutine writes it
	lastSeen := make([]atomic.Uint64, len(readers))
	errs := make(chan error, len(readers))
	for i, r := range readers {
		go func() {
			for f := range r.frames {
				if f["type"] != "message" || f["channel"] != ch {
					continue
				}
				seq := num(f, "seq")
				if seq != lastSeen[i].Load()+1 {
					errs <- fmt.Errorf("%s got seq %d after %d", names[i], seq, lastSeen[i].Load())
					return
				}
				lastSeen[i].Store(seq)
			}
		}()
	}
	body := strings.Repeat("x", 4096)
	for i := 0; e.srv.Hub.QueuedFor("bob") < 8; i++ {
		if i == 20000 {
			t.Fatal("bob's socket never filled")
		}
		sent := alice.ok(frame{"type": "send", "channel": ch, "body": body, "key": fmt.Sprint(i)}, "sent")
		last = num(sent, "seq")
		alice.event("message")
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		for i := range readers {
			if got := lastSeen[i].Load(); got != last {
				return fmt.Errorf("%s has seq %d of %d while bob is stuck", names[i], got, last)
			}
		}
		return nil
	})
	stalled.startReader()
	for seq := uint64(1); seq <= last; seq++ {
		if m := stalled.event("message"); num(m, "seq") != seq {
			t.Fatalf("bob got seq %d, want %d", num(m, "seq"), seq)
		}
	}
}

func TestOriginCheck(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Web.Origins = []string{"chat.example.com"} })
	try := func(origin string) int {
		req, _ := http.NewRequest("GET", e.base()+"/v1/ws", nil)
		for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
			"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := try("http://evil.example.org"); s != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", s)
	}
	if s := try("https://chat.example.com"); s != http.StatusSwitchingProtocols {
		t.Fatalf("allowed origin: %d", s)
	}
	if s := try("http://" + e.srv.HTTPAddr()); s != http.StatusSwitchingProtocols {
		t.Fatalf("same origin: %d", s)
	}
}

// Pushed messages reach a session in seq order per channel, even when
// several members send at once from several sessions.
func TestEventsInSeqOrder(t *testing.T) {
	e := newEnv(t)
	senders := []*ws{e.dial("alice"), e.dial("bob"), e.dial("carol")}
	watcher := e.dial("dave")
	g := senders[0].ok(frame{"type": "create_group", "name": "busy", "members": []string{"bob", "carol", "dave"}}, "group")
	const each = 30
	for i := range each { // requests pipelined, replies read later
		for j, s := range senders {
			s.send(frame{"type": "send", "channel": g["channel"], "body": "x", "key": fmt.Sprint(j, "-", i), "ref": fmt.Sprint(j, "-", i)})
		}
	}
	for want := uint64(1); want <= 3*each; want++ {
		m := watcher.event("message")
		if num(m, "seq") != want {
			t.Fatalf("got seq %v, want %d: out of order or a gap", m["seq"], want)
		}
	}
}

// A user is online while at least one of their sessions is live.
func TestOnlineWhileAnySessionLives(t *testing.T) {
	e := newEnv(t)
	alice := e.dial("alice")
	b1, b2 := e.dial("bob"), e.dial("bob")
	p := alice.ok(frame{"type": "presence", "users": []string{"bob"}}, "presence")
	if p["users"].(map[string]any)["bob"].(map[string]any)["online"] != true {
		t.Fatalf("presence %v", p)
	}
	b1.c.Close(websocket.StatusNormalClosure, "")
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := len(e.srv.Hub.SessionsOf("bob")); n != 1 {
			return fmt.Errorf("bob has %d sessions", n)
		}
		return nil
	})
	p = alice.ok(frame{"type": "presence", "users": []string{"bob"}}, "presence")
	if p["users"].(map[string]any)["bob"].(map[string]any)["online"] != true {
		t.Fatalf("bob went offline with a session still live: %v", p)
	}
	b2.c.Close(websocket.StatusNormalClosure, "")
	if ev := alice.event("presence"); ev["user"] != "bob" || ev["online"] != false {
		t.Fatalf("presence event %v", ev)
	}
}

// A client that sends its hello in the same packet as the upgrade request
// (before it has seen the 101) still gets its session: the bytes net/http
// read ahead are handed over with the connection.
func TestHelloBeforeUpgradeResponse(t *testing.T) {
	e := newEnv(t)
	c, err := net.Dial("tcp", e.srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello, _ := json.Marshal(frame{"type": "hello", "token": e.token("alice")})
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + e.srv.HTTPAddr() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	// A masked text frame, as a client must send (a 16-bit length).
	mask := [4]byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | 126, byte(len(hello) >> 8), byte(len(hello))}
	f = append(f, mask[:]...)
	for i, b := range hello {
		f = append(f, b^mask[i%4])
	}
	if _, err := c.Write(append([]byte(req), f...)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	// The server's first frame: unmasked text, short length.
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	n := int(head[1] & 0x7f)
	if n == 126 {
		ext := make([]byte, 2)
		io.ReadFull(br, ext)
		n = int(ext[0])<<8 | int(ext[1])
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	var welcome frame
	if json.Unmarshal(body, &welcome) != nil || welcome["type"] != "welcome" || welcome["user"] != "alice" {
		t.Fatalf("first frame %q, want alice's welcome", body)
	}
}
