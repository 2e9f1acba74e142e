package conn

import (
	"errors"
	"fmt"
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

// tryUncork writes what the socket takes without waiting: to a peer that
// reads nothing it comes back not done, still corked with the rest, which
// uncork then writes once the peer reads; the peer gets every byte in
// order. A connection that is no socket is left to uncork whole.
func TestCorkConnTryUncork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	c := &corkConn{Conn: sc}

	// A connection idle past the write deadline an earlier write set
	// still writes: the deadline is moved ahead first, as for a blocking
	// write.
	const timeout = 100 * time.Millisecond
	c.cork(timeout)
	c.Write([]byte("hello"))
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * timeout)
	c.cork(timeout)
	c.Write([]byte("again"))
	if done, err := c.tryUncork(); !done || err != nil {
		t.Fatalf("tryUncork past the last deadline: done %v, %v", done, err)
	}
	hello := make([]byte, 10)
	if _, err := io.ReadFull(peer, hello); err != nil || string(hello) != "helloagain" {
		t.Fatalf("read %q, %v", hello, err)
	}

	chunk := make([]byte, 32<<10) // under corkFlushAt: gathered, not written
	var sent int
	for done := true; done; {
		if sent > 256<<20 {
			t.Fatal("the socket never filled")
		}
		c.cork(time.Minute)
		for i := range chunk {
			chunk[i] = byte((sent + i) % 251)
		}
		c.Write(chunk)
		sent += len(chunk)
		if done, err = c.tryUncork(); err != nil {
			t.Fatal(err)
		}
	}
	if !c.corked || len(*c.buf) == 0 {
		t.Fatalf("not done, but corked %v with %d bytes left", c.corked, len(*c.buf))
	}
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for n := 0; n < sent; {
			m, err := peer.Read(buf)
			if err != nil {
				got <- err
				return
			}
			for i, b := range buf[:m] {
				if b != byte((n+i)%251) {
					got <- fmt.Errorf("byte %d is %d, want %d", n+i, b, (n+i)%251)
					return
				}
			}
			n += m
		}
		got <- nil
	}()
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	a, b := net.Pipe() // no socket under it
	defer a.Close()
	defer b.Close()
	p := &corkConn{Conn: a}
	p.cork(time.Minute)
	p.Write([]byte("x"))
	if done, err := p.tryUncork(); done || err != nil || !p.corked {
		t.Fatalf("tryUncork on a pipe: done %v, err %v, corked %v; want it left corked", done, err, p.corked)
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
