package server_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server/servertest"
)

// An idle node drops to one P (internal/idleprocs); a client's frames and
// committed entries each bring the others back.
func TestIdleNodeRunsOnOneProc(t *testing.T) {
	was := runtime.GOMAXPROCS(2) // whatever the machine has
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })
	t.Setenv("GOMAXPROCS", "2") // what the node restores
	procs := func(want int) func() error {
		return func() error {
			if got := runtime.GOMAXPROCS(0); got != want {
				return fmt.Errorf("GOMAXPROCS is %d, want %d", got, want)
			}
			return nil
		}
	}
	cfg := servertest.Config(t.TempDir())
	cfg.Process.IdleAfter = config.Duration{Duration: time.Second}
	s := servertest.Start(t, cfg)
	testutil.Eventually(t, 20*time.Second, procs(1))

	// A connection is work before its first frame: a node that took a
	// crowd's connecting and hellos on one P was still behind when their
	// first messages came.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+s.HTTPAddr()+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, procs(2))
	ws.CloseNow()
	testutil.Eventually(t, 20*time.Second, procs(1))

	c := dialOn(t, s, "alice") // its hello is a frame
	testutil.Eventually(t, 5*time.Second, procs(2))
	c.Close()
	testutil.Eventually(t, 20*time.Second, procs(1))

	// A committed entry, with no client frame on this node.
	if _, err := s.Service.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: "hi", Key: "k1"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, procs(2))
}
