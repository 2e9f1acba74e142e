package conn

import (
	"context"
	"testing"
	"time"
)

// Requests that start close together share one context, which ends
// within the request timeout or with the session; one whose deadline has
// come nearer than the slack allows is not handed out again.
func TestRequestContextIsShared(t *testing.T) {
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Session{ctx: sctx}
	a, b := s.requestContext(), s.requestContext()
	if a != b {
		t.Fatal("two requests a moment apart got different contexts")
	}
	d, ok := a.Deadline()
	if left := time.Until(d); !ok || left > requestTimeout || left <= requestTimeout-requestSlack {
		t.Fatalf("deadline %v from now, want within (%v, %v]", left, requestTimeout-requestSlack, requestTimeout)
	}
	old, oldCancel := context.WithDeadline(sctx, time.Now().Add(requestTimeout-requestSlack-time.Millisecond))
	defer oldCancel()
	s.reqCtx = old
	if c := s.requestContext(); c == old {
		t.Fatal("a context with less than the timeout minus the slack left was handed out")
	}
	cancel()
	if a.Err() == nil {
		t.Fatal("the session ended and its request context did not")
	}
}
