// Package testutil holds helpers shared by parley's tests.
package testutil

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// Logger discards logs unless PARLEY_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Eventually polls cond every few milliseconds until it returns nil or
// total passes, then fails the test with cond's last error.
func Eventually(t testing.TB, total time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FreeAddr returns host:port with the port free for TCP and UDP (a node
// gossips on both), taken below the kernel's ephemeral range: a port from
// that range (a listener on :0) could be handed to another connection's
// local end, or to another test binary's :0, before the server binds it,
// or while it restarts on it; a server that cannot bind exits, and
// TestChaos saw only "connection refused" until it gave up.
func FreeAddr(t testing.TB, host string) string {
	t.Helper()
	for range 1000 {
		addr := net.JoinHostPort(host, strconv.Itoa(10000+rand.IntN(22000)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr
	}
	t.Fatalf("no free port on %s", host)
	return ""
}
