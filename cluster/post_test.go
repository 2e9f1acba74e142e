package cluster

import (
	"fmt"
	"testing"
	"time"
)

// Posted messages reach the handler in the order sent, with the sender's
// name; a stream that breaks is dialed again for the next message.
func TestPostStreamInOrderAndRedialed(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	got := make(chan string, 1000)
	tn.SetMessageHandler("note", func(from string, body []byte) error {
		got <- from + ":" + string(body)
		return nil
	})
	sender := forwarder(t)
	sender.cfg.NodeID = "n9"
	l := &postLink{q: make(chan postItem, postQueue)}
	sender.goRun(func() { sender.runPostLink(tn.PeerAddr(), l) })
	post := func(body string) { l.q <- postItem{kind: "note", body: []byte(body)} }

	l.q <- postItem{kind: "nobody-handles-this", body: []byte("x")} // skipped, the stream goes on
	for i := range 100 {
		post(fmt.Sprint(i))
	}
	for i := range 100 {
		if m := <-got; m != fmt.Sprint("n9:", i) {
			t.Fatalf("message %d arrived as %q", i, m)
		}
	}

	sender.mux.Block(func(string) bool { return true }) // cuts the open stream
	sender.mux.Block(nil)
	deadline := time.After(10 * time.Second)
	for i := 0; ; i++ { // what was sent into the cut stream may be lost; later ones arrive
		post(fmt.Sprint("after-", i))
		select {
		case m := <-got:
			if m[:9] != "n9:after-" {
				t.Fatalf("after the cut: %q", m)
			}
			return
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("nothing arrived after the stream was cut")
		}
	}
}

// PostThen's done comes once the message is in the stream (the handler
// may run any time after), and also when it is lost: its stream cut, and
// none to be dialed.
func TestPostThenCallsDone(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	got := make(chan string, 1)
	tn.SetMessageHandler("note", func(from string, body []byte) error {
		got <- string(body)
		return nil
	})
	sender := forwarder(t)
	l := &postLink{q: make(chan postItem, postQueue)}
	sender.goRun(func() { sender.runPostLink(tn.PeerAddr(), l) })
	// post queues body and waits for its done.
	post := func(body, what string) {
		t.Helper()
		done := make(chan struct{})
		l.q <- postItem{kind: "note", body: []byte(body), done: func() { close(done) }}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("done was not called for a %s message", what)
		}
	}
	post("hi", "written")
	if m := <-got; m != "hi" {
		t.Fatalf("the handler got %q", m)
	}
	sender.mux.Block(func(string) bool { return true }) // cuts the stream; no new one
	post("lost", "lost")
}
