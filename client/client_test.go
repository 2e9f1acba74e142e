package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string { return testutil.FreeAddr(t, "127.0.0.1") }

func token(t *testing.T, cfg config.Config, user string) string {
	tok, _, err := auth.NewIssuer([]byte(cfg.Auth.Secret), time.Hour).Mint(user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dial(t *testing.T, base string, opt client.Options) *client.Client {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, base, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nextMessage waits for the next message event.
func nextMessage(t *testing.T, c *client.Client) client.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatal("events closed")
			}
			if ev.Type == "message" {
				return ev
			}
		case <-timeout:
			t.Fatal("no message event")
		}
	}
}

func TestRegisterLoginSendHistory(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t.TempDir()))
	base, ctx := "http://"+srv.HTTPAddr(), context.Background()
	if err := client.Register(ctx, base, "alice", "correct horse"); err != nil {
		t.Fatal(err)
	}
	err := client.Register(ctx, base, "alice", "correct horse")
	if e, ok := err.(*client.Error); !ok || e.Code != "conflict" {
		t.Fatalf("second register: %v", err)
	}
	tok, exp, err := client.Login(ctx, base, "alice", "correct horse")
	if err != nil || time.Until(exp) < time.Hour {
		t.Fatal(err, exp)
	}
	c := dial(t, base, client.Options{Token: tok})
	if c.User() != "alice" {
		t.Fatalf("user %q", c.User())
	}
	s1, err := c.Send(ctx, client.SendArgs{To: "bob", Body: "one", Key: "fixed"})
	if err != nil || s1.Seq != 1 {
		t.Fatal(s1, err)
	}
	s2, _ := c.Send(ctx, client.SendArgs{To: "bob", Body: "one", Key: "fixed"})
	if !s2.Duplicate || s2.Seq != 1 {
		t.Fatalf("resend %+v", s2)
	}
	if ev := nextMessage(t, c); ev.Body != "one" || ev.Seq != 1 {
		t.Fatalf("own message %+v", ev)
	}
	after := uint64(0)
	page, err := c.History(ctx, "dm:alice:bob", client.HistoryQuery{After: &after})
	if err != nil || len(page.Messages) != 1 || page.LastSeq != 1 {
		t.Fatal(page, err)
	}
	if _, err := c.History(ctx, "g:nope", client.HistoryQuery{}); err == nil {
		t.Fatal("history of an unknown group worked")
	}
}

// The largest history page the protocol allows by default, 1000 messages
// of 4096 control characters that JSON escapes six-fold (24 MB in one
// frame), reaches a client with the default options.
func TestLargestHistoryPage(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	srv := servertest.Start(t, cfg)
	base, ctx := "http://"+srv.HTTPAddr(), context.Background()
	body := strings.Repeat("\x01", 4096)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 { // concurrent sends share Raft entries: quicker to fill
		wg.Go(func() {
			for i := range 125 {
				_, err := srv.Service.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: body, Key: fmt.Sprint(w, "-", i)})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c := dial(t, base, client.Options{Token: token(t, cfg, "bob"), NoSync: true})
	after := uint64(0)
	page, err := c.History(ctx, "dm:alice:bob", client.HistoryQuery{After: &after, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1000 || page.Messages[999].Seq != 1000 || page.Messages[0].Body != body {
		t.Fatalf("a page of %d messages, last seq %d", len(page.Messages), page.LastSeq)
	}
	// With a smaller limit a page cannot come: the error says so, rather
	// than that the connection was lost and a retry might do. (A page the
	// socket buffers hold: the server is not left writing to a client that
	// stopped reading.)
	small := dial(t, base, client.Options{Token: token(t, cfg, "bob"), NoSync: true, ReadLimit: 64 << 10})
	_, err = small.History(ctx, "dm:alice:bob", client.HistoryQuery{After: &after, Limit: 20})
	if e, ok := err.(*client.Error); !ok || e.Code != "too_large" {
		t.Fatalf("a page over ReadLimit: %v, want too_large", err)
	}
}

// A reconnecting client gets every message it missed while the node was
// down, with no gaps and no duplicates.
func TestReconnectSyncsWithoutGapsOrDuplicates(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	cfg.HTTP = freeAddr(t)
	srv := servertest.Start(t, cfg)
	base, ctx := "http://"+cfg.HTTP, context.Background()
	bob := dial(t, base, client.Options{Token: token(t, cfg, "bob"), Reconnect: true})
	alice := dial(t, base, client.Options{Token: token(t, cfg, "alice")})
	for i := 1; i <= 3; i++ {
		if _, err := alice.Send(ctx, client.SendArgs{To: "bob", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if ev := nextMessage(t, bob); ev.Seq != uint64(i) {
			t.Fatalf("got seq %d, want %d", ev.Seq, i)
		}
	}
	alice.Close()
	srv.Close()
	// Bob's client is now reconnecting. A new node process on the same
	// data and address takes alice's messages meanwhile.
	srv2, err := server.Start(cfg, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	alice = dial(t, base, client.Options{Token: token(t, cfg, "alice")})
	for i := 4; i <= 8; i++ {
		if _, err := alice.Send(ctx, client.SendArgs{To: "bob", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 4; i <= 8; i++ {
		ev := nextMessage(t, bob)
		if ev.Seq != uint64(i) || ev.Body != fmt.Sprint(i) {
			t.Fatalf("got seq %d %q, want %d", ev.Seq, ev.Body, i)
		}
	}
	select {
	case ev := <-bob.Events():
		if ev.Type == "message" {
			t.Fatalf("duplicate or extra message %+v", ev)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

// A client given the cluster's other nodes follows it through the loss of
// its own: it reconnects to another node and syncs what it missed there.
func TestReconnectToAnotherNode(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	base := func(i int) string { return "http://" + nodes[i].HTTPAddr() }
	cfg := servertest.Config("") // for its secret, the nodes' too
	ctx := context.Background()
	bob := dial(t, base(0), client.Options{Token: token(t, cfg, "bob"), Reconnect: true, Others: []string{base(1), base(2)}})
	alice := dial(t, base(1), client.Options{Token: token(t, cfg, "alice")})
	send := func(i int) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second) // the client retries while shards move
		defer cancel()
		if _, err := alice.Send(sctx, client.SendArgs{To: "bob", Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	if ev := nextMessage(t, bob); ev.Seq != 1 || bob.Node() != "n1" {
		t.Fatalf("got seq %d on %s, want 1 on n1", ev.Seq, bob.Node())
	}
	nodes[0].Close()
	for i := 2; i <= 6; i++ {
		send(i)
	}
	for i := 2; i <= 6; i++ {
		if ev := nextMessage(t, bob); ev.Seq != uint64(i) || ev.Body != fmt.Sprint(i) {
			t.Fatalf("got seq %d %q, want %d", ev.Seq, ev.Body, i)
		}
	}
	if bob.Node() == "n1" {
		t.Fatal("bob's client is still on n1")
	}
}

// With OnEvent, events come to the callback in order, large frames among
// them (the read buffer is reused between frames), and not to Events;
// the same with InlineEvents, on the read loop.
func TestOnEventGetsEventsInOrder(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprint("inline=", inline), func(t *testing.T) { testOnEventInOrder(t, inline) })
	}
}

func testOnEventInOrder(t *testing.T, inline bool) {
	cfg := servertest.Config(t.TempDir())
	srv := servertest.Start(t, cfg)
	base, ctx := "http://"+srv.HTTPAddr(), context.Background()
	got := make(chan client.Event, 100)
	bob := dial(t, base, client.Options{Token: token(t, cfg, "bob"), NoSync: inline, InlineEvents: inline, OnEvent: func(ev client.Event) {
		if ev.Type == "message" {
			got <- ev
		}
	}})
	alice := dial(t, base, client.Options{Token: token(t, cfg, "alice")})
	bodies := []string{"short", strings.Repeat("long ", 800), "short again"}
	for _, b := range bodies {
		if _, err := alice.Send(ctx, client.SendArgs{To: "bob", Body: b}); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range bodies {
		select {
		case ev := <-got:
			if ev.Body != want || ev.Seq != uint64(i+1) {
				t.Fatalf("event %d: seq %d, body %.20q; want seq %d, %.20q", i, ev.Seq, ev.Body, i+1, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d did not come", i)
		}
	}
	select {
	case ev := <-bob.Events():
		t.Fatalf("Events got %+v although OnEvent is set", ev)
	default:
	}
	// Nor is Events given a buffer that only OnEvent's absence would use.
	if n := cap(bob.Events()); n != 0 {
		t.Errorf("Events has a buffer of %d events although OnEvent is set", n)
	}
}

// InlineEvents needs OnEvent and NoSync, and no Reconnect: otherwise there
// would be gap filling or a resync to order the events with.
func TestInlineEventsNeedsNoSync(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	srv := servertest.Start(t, cfg)
	base := "http://" + srv.HTTPAddr()
	on := func(client.Event) {}
	for _, o := range []client.Options{
		{InlineEvents: true, NoSync: true},
		{InlineEvents: true, OnEvent: on},
		{InlineEvents: true, OnEvent: on, NoSync: true, Reconnect: true},
	} {
		o.Token = token(t, cfg, "bob")
		if c, err := client.Dial(context.Background(), base, o); err == nil {
			c.Close()
			t.Fatalf("Dial accepted %+v", o)
		}
	}
}
