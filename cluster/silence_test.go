package cluster

import (
	"errors"
	"testing"
	"time"
)

// A peer found silent has its requests in flight canceled and new ones
// refused until silentFor has passed; other peers are not touched.
func TestSilencedPeerFailsFastThenRecovers(t *testing.T) {
	var s silence
	inflight, err := s.check("a:1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := s.check("b:1")
	s.found("a:1")
	if inflight.Err() == nil {
		t.Error("a request in flight to the silent peer was not canceled")
	}
	if other.Err() != nil {
		t.Error("a request to another peer was canceled")
	}
	if _, err := s.check("a:1"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a new request to the silent peer: %v, want ErrUnavailable", err)
	}
	s.peers["a:1"].until = time.Now().Add(-time.Millisecond) // silentFor later
	again, err := s.check("a:1")
	if err != nil || again.Err() != nil {
		t.Errorf("after silentFor: %v, context %v", err, again.Err())
	}
}

// A peer found silent that this node then hears from (it was this node
// that stalled) is taken back at once; contact from before the alarm does
// not count, and other peers stay as they are.
func TestSilencedPeerHeardAgain(t *testing.T) {
	var s silence
	if s.inForce() {
		t.Fatal("silence in force before any peer was found silent")
	}
	before := time.Now()
	s.found("a:1")
	s.found("b:1")
	if !s.inForce() {
		t.Fatal("no silence in force after two peers were found silent")
	}
	s.heard("a:1", before)
	if _, err := s.check("a:1"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("after contact from before the alarm: %v, want ErrUnavailable", err)
	}
	s.heard("a:1", time.Now().Add(time.Millisecond))
	if _, err := s.check("a:1"); err != nil {
		t.Errorf("after contact since the alarm: %v", err)
	}
	if _, err := s.check("b:1"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a peer not heard from: %v, want ErrUnavailable", err)
	}
}
