package conn

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A write to a peer that reads nothing gives up after about the timeout;
// a connection idle for longer than the timeout still writes (the kept
// deadline is moved ahead first), corked or not.
func TestCorkConnWriteTimeout(t *testing.T) {
	a, b := net.Pipe() // unbuffered: a write waits for a read
	defer a.Close()
	defer b.Close()
	c := &corkConn{Conn: a}
	const timeout = 100 * time.Millisecond

	c.cork(timeout)
	c.Write([]byte("nobody reads this"))
	start := time.Now()
	err := c.uncork()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("uncork to a peer that reads nothing: %v, want a deadline error", err)
	}
	if waited := time.Since(start); waited > 2*timeout {
		t.Fatalf("gave up after %v, want within %v", waited, timeout)
	}

	time.Sleep(2 * timeout) // idle past the deadline: the next write must not fail at once
	got := make(chan []byte, 2)
	go func() {
		for range 2 {
			buf := make([]byte, 64)
			n, _ := io.ReadAtLeast(b, buf, 1)
			got <- buf[:n]
		}
	}()
	if _, err := c.Write([]byte("uncorked")); err != nil {
		t.Fatalf("uncorked write after idling: %v", err)
	}
	c.cork(timeout)
	c.Write([]byte("corked"))
	if err := c.uncork(); err != nil {
		t.Fatalf("corked write after idling: %v", err)
	}
	for _, want := range []string{"uncorked", "corked"} {
		if b := <-got; string(b) != want {
			t.Fatalf("read %q, want %q", b, want)
		}
	}
}

// A session's own control frames go out with the burst they were queued
// in, in order; once the session is closing (end), none does.
func TestCorkConnControlFrames(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	c := &corkConn{Conn: a}
	c.cork(time.Second)
	c.Write([]byte("data"))
	if err := c.writeControl(pingFrame); err != nil {
		t.Fatal(err)
	}
	c.end()
	if err := c.writeControl(pingFrame); err != nil {
		t.Fatalf("a control frame after end: %v, want it dropped quietly", err)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if all, want := <-got, append([]byte("data"), pingFrame...); string(all) != string(want) {
		t.Fatalf("wrote %q, want %q", all, want)
	}
}
