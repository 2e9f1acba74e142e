package conn

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/channel"
)

// The webhook is the push-notification integration point: when a message
// commits, the shard's leader POSTs it once to the configured URL with the
// members that have no live session on any node, so a backend can notify
// their phones. Calls are queued (bounded) and retried a few times; a call
// that still fails is dropped and counted: history has the message anyway.

// WebhookOptions configure the outgoing webhook; an empty URL turns it off.
type WebhookOptions struct {
	URL     string
	Secret  string // signs each body: X-Parley-Signature: sha256=<hex HMAC>
	Timeout time.Duration
}

// webhookCall is the JSON body of one call.
type webhookCall struct {
	Type    string   `json:"type"` // "message"
	Channel string   `json:"channel"`
	Seq     uint64   `json:"seq"`
	From    string   `json:"from"`
	Body    string   `json:"body"`
	Ts      int64    `json:"ts"`
	Offline []string `json:"offline"`
}

const (
	webhookQueue    = 10000
	webhookAttempts = 3
)

type webhook struct {
	opt    WebhookOptions
	client *http.Client
	log    *slog.Logger
	q      chan webhookCall
	sent   atomic.Int64
	failed atomic.Int64
}

func newWebhook(opt WebhookOptions, log *slog.Logger) *webhook {
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	return &webhook{opt: opt, client: &http.Client{Timeout: opt.Timeout}, log: log, q: make(chan webhookCall, webhookQueue)}
}

// queue adds a call without blocking; a full queue drops it.
func (w *webhook) queue(c webhookCall) {
	select {
	case w.q <- c:
	default:
		w.failed.Add(1)
	}
}

// run sends queued calls in order until stop closes.
func (w *webhook) run(stop <-chan struct{}) {
	for {
		select {
		case c := <-w.q:
			w.deliver(c, stop)
		case <-stop:
			return
		}
	}
}

func (w *webhook) deliver(c webhookCall, stop <-chan struct{}) {
	body, _ := json.Marshal(c)
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := w.post(body)
		if err == nil {
			w.sent.Add(1)
			return
		}
		if attempt == webhookAttempts {
			w.failed.Add(1)
			w.log.Warn("webhook call dropped", "channel", c.Channel, "seq", c.Seq, "err", err)
			return
		}
		select {
		case <-time.After(backoff):
			backoff *= 2
		case <-stop:
			return
		}
	}
}

func (w *webhook) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.opt.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if w.opt.Secret != "" {
		m := hmac.New(sha256.New, []byte(w.opt.Secret))
		m.Write(body)
		req.Header.Set("X-Parley-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

// SetWebhook turns the outgoing webhook on; call before sessions arrive.
func (h *Hub) SetWebhook(opt WebhookOptions) {
	if opt.URL == "" {
		return
	}
	h.hook = newWebhook(opt, h.log.With("sys", "webhook"))
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.hook.run(h.stop)
	}()
}

// notifyOffline queues a webhook call for the members of a committed
// message that have no live session anywhere (the sender aside).
func (h *Hub) notifyOffline(m *channel.Message, members []string) {
	if h.hook == nil {
		return
	}
	var offline []string
	for _, u := range members {
		if u != m.From && !h.isOnline(u) {
			offline = append(offline, u)
		}
	}
	if len(offline) == 0 {
		return
	}
	h.hook.queue(webhookCall{Type: "message", Channel: m.Channel, Seq: m.Seq, From: m.From, Body: m.Body, Ts: m.Ts, Offline: offline})
}

// isOnline reports whether user has a live session on this or another node.
func (h *Hub) isOnline(user string) bool {
	h.mu.Lock()
	local := h.users[user] != nil
	h.mu.Unlock()
	return local || h.dir.online(user)
}
