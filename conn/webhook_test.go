package conn_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/internal/testutil"
)

func TestWebhookForOfflineRecipients(t *testing.T) {
	var mu sync.Mutex
	var calls []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("hook-secret"))
		m.Write(body)
		if r.Header.Get("X-Parley-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			t.Errorf("bad signature on %s", body)
		}
		var c map[string]any
		json.Unmarshal(body, &c)
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
	}))
	defer hook.Close()
	e := newEnv(t, func(c *config.Config) { c.Webhook.URL, c.Webhook.Secret = hook.URL, "hook-secret" })
	got := func(n int) []map[string]any {
		var out []map[string]any
		testutil.Eventually(t, 5*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(calls) < n {
				return fmt.Errorf("%d webhook calls, want %d", len(calls), n)
			}
			out = slices.Clone(calls)
			return nil
		})
		return out
	}
	alice := e.dial("alice")
	// Bob is offline: one call names him.
	alice.ok(frame{"type": "send", "to": "bob", "body": "wake up", "key": "1"}, "sent")
	c := got(1)[0]
	if c["channel"] != "dm:alice:bob" || c["from"] != "alice" || c["body"] != "wake up" || num(c, "seq") != 1 ||
		!slices.Equal(strs(c["offline"]), []string{"bob"}) {
		t.Fatalf("call %v", c)
	}
	// Bob online: no call for his message. Carol offline: a call for hers.
	bob := e.dial("bob")
	_ = bob
	alice.ok(frame{"type": "send", "to": "bob", "body": "are you there", "key": "2"}, "sent")
	alice.ok(frame{"type": "send", "to": "carol", "body": "hi carol", "key": "3"}, "sent")
	all := got(2)
	if all[1]["channel"] != "dm:alice:carol" || !slices.Equal(strs(all[1]["offline"]), []string{"carol"}) {
		t.Fatalf("second call %v (the message to bob, online, must not have one)", all[1])
	}
	// The hub counts a call once the hook has answered it, a moment after
	// the hook saw it.
	testutil.Eventually(t, 5*time.Second, func() error {
		if st := e.srv.Hub.Stats(); st.WebhookSent != 2 || st.WebhookFailed != 0 {
			return fmt.Errorf("webhook stats %+v", st)
		}
		return nil
	})
}
