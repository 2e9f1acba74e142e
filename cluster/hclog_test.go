package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

// raft's warnings and errors keep their level while the node runs, and
// are Debug once it is closing.
func TestRaftLogsQuietWhileClosing(t *testing.T) {
	var buf bytes.Buffer
	var closing atomic.Bool
	l := newHclog(slog.New(slog.NewTextHandler(&buf, nil)), "raft", closing.Load).Named("net").With("shard", 3)
	l.Error("failed to appendEntries to", "error", "EOF")
	l.Warn("something odd")
	closing.Store(true)
	l.Error("failed to decode incoming command", "error", "transport shutdown")
	l.Warn("rejecting vote request")
	out := buf.String()
	if !strings.Contains(out, "level=ERROR msg=\"failed to appendEntries to\"") || !strings.Contains(out, "level=WARN msg=\"something odd\"") {
		t.Fatalf("before closing:\n%s", out)
	}
	if strings.Contains(out, "transport shutdown") || strings.Contains(out, "rejecting vote") {
		t.Fatalf("while closing, above Debug:\n%s", out)
	}
}
