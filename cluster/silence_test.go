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
