package server_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// A node whose HTTP address is taken fails to start with an error that says
// so, and lets go of everything it had opened: the same data directory
// starts on a free address right after.
func TestStartOnTakenAddressFailsCleanly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := servertest.Config(t.TempDir())
	cfg.HTTP = busy.Addr().String()
	s, err := server.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		s.Close()
		t.Fatal("started on an address in use")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not name the cause", err)
	}
	cfg.HTTP = "127.0.0.1:0"
	servertest.Start(t, cfg) // the database and ports were released
}
