// Package testutil holds helpers shared by parley's tests.
package testutil

import (
	"io"
	"log/slog"
	"os"
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
