package conn

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
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

// end does not wait for a write stuck on the socket: a session is closed
// for being slow from under the hub's lock, while its writer may be stuck
// writing to it (for up to write_timeout), and every delivery on the node
// waited with it.
func TestCorkConnEndDuringStuckWrite(t *testing.T) {
	a, b := net.Pipe() // unbuffered: a write waits for a read, which never comes
	defer b.Close()
	c := &corkConn{Conn: a}
	c.cork(time.Minute)
	c.Write([]byte("nobody reads this"))
	writing := make(chan error, 1)
	go func() { writing <- c.uncork() }()
	testutil.Eventually(t, 10*time.Second, func() error {
		if c.mu.TryLock() {
			c.mu.Unlock()
			return errors.New("the write has not started")
		}
		return nil
	})
	ended := make(chan struct{})
	go func() {
		c.end()
		close(ended)
	}()
	select {
	case <-ended:
	case err := <-writing:
		t.Fatalf("the write ended (%v) before end returned", err)
	case <-time.After(10 * time.Second):
		t.Fatal("end waited for the stuck write")
	}
	a.Close()
	<-writing
}
