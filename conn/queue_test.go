package conn

import "testing"

// A held frame goes first, and what is pushed while it is held starts no
// writer: the welcome stays a session's first frame while the node waits
// to tell the others where its user is.
func TestOutQueueHoldGoesFirst(t *testing.T) {
	q := outQueue{max: 8}
	q.hold(outFrame{b: []byte("welcome")})
	if start, ok := q.push(outFrame{b: []byte("message")}); start || !ok {
		t.Fatalf("a push while held: start %v, ok %v; want no writer started", start, ok)
	}
	got := q.takeOrIdle()
	if len(got) != 2 || string(got[0].b) != "welcome" || string(got[1].b) != "message" {
		t.Fatalf("queue order %v", got)
	}
	if q.takeOrIdle() != nil {
		t.Fatal("an empty queue gave frames")
	}
	if start, _ := q.push(outFrame{b: []byte("later")}); !start {
		t.Fatal("after the writer went idle a push did not start one")
	}
}
