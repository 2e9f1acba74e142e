package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/server/servertest"
)

// Many sends in flight on one connection all get their own answer, in
// fewer network writes than frames: frames queued while one is written go
// out together.
func TestPipelinedSendsShareWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialAlice(t, ctx, func(cfg *config.Config) { cfg.Limits.Rate, cfg.Limits.Burst = 1e6, 1e6 })
	c.mu.Lock()
	conn := c.link.conn
	c.mu.Unlock()
	conn.mu.Lock()
	before := conn.writes
	conn.mu.Unlock()

	const senders, each = 32, 40 // the server lets a session have 64 requests waiting
	var mu sync.Mutex
	seqs := map[uint64]string{}
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				key := fmt.Sprintf("k%d-%d", i, j)
				s, err := c.Send(ctx, SendArgs{To: "bob", Body: key, Key: key})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := seqs[s.Seq]; dup {
					t.Errorf("seq %d answered to both %s and %s", s.Seq, prev, key)
				}
				seqs[s.Seq] = key
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seqs) != senders*each {
		t.Fatalf("%d distinct seqs for %d sends", len(seqs), senders*each)
	}
	for seq := uint64(1); seq <= senders*each; seq++ {
		if _, ok := seqs[seq]; !ok {
			t.Fatalf("seq %d missing: the channel has gaps", seq)
		}
	}
	conn.mu.Lock()
	writes := conn.writes - before
	conn.mu.Unlock()
	t.Logf("%d frames in %d writes", senders*each, writes)
	if writes >= senders*each {
		t.Fatalf("%d frames took %d writes: none went out together", senders*each, writes)
	}
}

// A session that ends because a write failed says so: the read that
// fails next only sees its socket closed under it.
func TestFailedWriteIsTheReason(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialAlice(t, ctx, nil)
	c.mu.Lock()
	tcp := c.link.conn.Conn.(*net.TCPConn)
	c.mu.Unlock()
	// Every write from now on fails, and the server is told nothing.
	if err := tcp.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, SendArgs{To: "bob", Body: "x", Key: "k"}); err == nil {
		t.Fatal("a send on a socket that cannot write succeeded")
	}
	<-c.Done()
	if err := c.Err(); err == nil || !strings.HasPrefix(err.Error(), "write: ") {
		t.Fatalf("the session ended with %v, want the write's error", err)
	}
}

// dialAlice starts a node (tweak adjusts its configuration) and connects
// to it as alice, without the sync; both end with the test.
func dialAlice(t *testing.T, ctx context.Context, tweak func(*config.Config)) *Client {
	t.Helper()
	cfg := servertest.Config(t.TempDir())
	if tweak != nil {
		tweak(&cfg)
	}
	srv := servertest.Start(t, cfg)
	tok, _, err := auth.NewIssuer([]byte(cfg.Auth.Secret), time.Hour).Mint("alice")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctx, "http://"+srv.HTTPAddr(), Options{Token: tok, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The error a lost connection reports leads with its cause: the side whose
// failure closed the socket, not the one that then found it closed.
func TestLostBecause(t *testing.T) {
	closed := fmt.Errorf("failed to write frame: %w", net.ErrClosed)
	pong := errors.New("failed to handle control frame opPing: failed to write control frame opPong: context deadline exceeded")
	timeout := errors.New("write tcp: i/o timeout")
	for _, c := range []struct {
		read, write error
		want        string
		is          error
	}{
		{pong, nil, pong.Error(), nil},
		{pong, closed, "read: " + pong.Error() + " (then write: " + closed.Error() + ")", nil},
		{closed, timeout, "write: " + timeout.Error() + " (then read: " + closed.Error() + ")", timeout},
		{closed, closed, "write: " + closed.Error() + " (then read: " + closed.Error() + ")", net.ErrClosed},
	} {
		err := lostBecause(c.read, c.write)
		if err.Error() != c.want {
			t.Errorf("read %v, write %v: got %q, want %q", c.read, c.write, err, c.want)
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("read %v, write %v: %v does not wrap %v", c.read, c.write, err, c.is)
		}
	}
	if err := lostBecause(pong, closed); !errors.Is(err, pong) {
		t.Errorf("%v does not wrap the read's error", err)
	}
}
