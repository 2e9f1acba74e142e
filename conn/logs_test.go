package conn_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tokens, passwords and message bodies never reach the logs, even at debug.
func TestLogsHoldNoSecrets(t *testing.T) {
	var logs syncBuffer
	cfg := servertest.Config(t.TempDir())
	srv, err := server.Start(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e := &env{t: t, srv: srv, cfg: cfg}
	if err := srv.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	postJSON(t, e.base()+"/v1/register", `{"user":"alice","password":"hunter2-secret-pw"}`)
	_, login := postJSON(t, e.base()+"/v1/login", `{"user":"alice","password":"hunter2-secret-pw"}`)
	w := e.dialRaw(nil)
	w.send(frame{"type": "hello", "token": login["token"]})
	w.expect("welcome")
	w.ok(frame{"type": "send", "to": "bob", "body": "the secret plans", "key": "k"}, "sent")
	w.fails(frame{"type": "send", "to": "Bob", "body": "more secret plans", "key": "k"}, "bad_request")
	bad := e.dialRaw(nil)
	bad.send(frame{"type": "hello", "token": "forged.token.value"})
	bad.closeCode()
	srv.Close()
	out := logs.String()
	if !strings.Contains(out, "parley node started") {
		t.Fatal("the logs were not captured")
	}
	for _, secret := range []string{login["token"].(string), "hunter2-secret-pw", "secret plans", "forged.token.value"} {
		if strings.Contains(out, secret) {
			t.Errorf("the logs contain %q", secret)
		}
	}
}
