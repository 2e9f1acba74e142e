package conn_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is one node and helpers to talk to it.
type env struct {
	t   *testing.T
	srv *server.Server
	cfg config.Config
}

func newEnv(t *testing.T, tweak ...func(*config.Config)) *env {
	cfg := servertest.Config(t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 10000, 10000
	for _, f := range tweak {
		f(&cfg)
	}
	return &env{t: t, srv: servertest.Start(t, cfg), cfg: cfg}
}

func (e *env) base() string { return "http://" + e.srv.HTTPAddr() }

func (e *env) token(user string) string {
	tok, _, err := auth.NewIssuer([]byte(e.cfg.Auth.Secret), time.Hour).Mint(user)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// ws is a raw protocol session for conformance checks.
type ws struct {
	t       *testing.T
	c       *websocket.Conn
	pending []frame // events read while waiting for a reply
	// A background reader fills frames until the connection ends, then
	// closes it with closeErr set: coder/websocket drops a connection whose
	// Read context expires, so reads with a timeout must not call Read.
	frames   chan frame
	closeErr error
}

// startReader runs the background reader.
func (w *ws) startReader() {
	w.frames = make(chan frame, 4096)
	go func() {
		defer close(w.frames)
		for {
			_, raw, err := w.c.Read(context.Background())
			if err != nil {
				w.closeErr = err
				return
			}
			var f frame
			if err := json.Unmarshal(raw, &f); err != nil {
				f = frame{"type": "non-json", "raw": string(raw)}
			}
			w.frames <- f
		}
	}()
}

// dialRaw opens a WebSocket without saying hello.
func (e *env) dialRaw(header http.Header) *ws {
	e.t.Helper()
	w := e.dialSilent(header)
	w.startReader()
	return w
}

// dialSilent opens a WebSocket that reads nothing (so it answers no pings)
// until startReader.
func (e *env) dialSilent(header http.Header) *ws {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+e.srv.HTTPAddr()+"/v1/ws", &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	w := &ws{t: e.t, c: c}
	e.t.Cleanup(func() { c.CloseNow() })
	return w
}

// dial opens a session for user and checks the welcome.
func (e *env) dial(user string) *ws {
	e.t.Helper()
	w := e.dialRaw(nil)
	w.send(map[string]any{"type": "hello", "token": e.token(user)})
	welcome := w.expect("welcome")
	if welcome["user"] != user || welcome["session"] == "" || welcome["node"] == "" {
		e.t.Fatalf("welcome %v", welcome)
	}
	return w
}

func (w *ws) send(frame any) {
	w.t.Helper()
	raw, err := json.Marshal(frame)
	if err != nil {
		w.t.Fatal(err)
	}
	w.sendRaw(raw)
}

func (w *ws) sendRaw(raw []byte) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, raw); err != nil {
		w.t.Fatal(err)
	}
}

type frame = map[string]any

// read returns the next frame, failing after 5 s.
func (w *ws) read() frame {
	w.t.Helper()
	if len(w.pending) > 0 {
		f := w.pending[0]
		w.pending = w.pending[1:]
		return f
	}
	f, err := w.readWithin(5 * time.Second)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

func (w *ws) readWithin(d time.Duration) (frame, error) {
	select {
	case f, ok := <-w.frames:
		if !ok {
			return nil, fmt.Errorf("connection closed: %v", w.closeErr)
		}
		if f["type"] == "non-json" {
			return nil, fmt.Errorf("server sent non-JSON %q", f["raw"])
		}
		return f, nil
	case <-time.After(d):
		return nil, fmt.Errorf("no frame within %v", d)
	}
}

// expect reads frames until one of type typ, failing on anything else.
func (w *ws) expect(typ string) frame {
	w.t.Helper()
	f := w.read()
	if f["type"] != typ {
		w.t.Fatalf("got %v, want a %s frame", f, typ)
	}
	return f
}

// call sends a request with a ref and returns its reply (of any type).
func (w *ws) call(req frame) frame {
	w.t.Helper()
	ref := fmt.Sprintf("r%d", time.Now().UnixNano())
	req["ref"] = ref
	w.send(req)
	var events []frame
	defer func() { w.pending = append(w.pending, events...) }()
	for {
		f, err := w.readWithin(5 * time.Second)
		if err != nil {
			w.t.Fatalf("waiting for the reply to %v: %v", req["type"], err)
		}
		if f["ref"] == ref {
			return f
		}
		if _, isReply := f["ref"]; isReply || f["type"] == "error" {
			w.t.Fatalf("a reply with another ref: %v", f)
		}
		events = append(events, f)
	}
}

// ok calls and wants a reply of type typ.
func (w *ws) ok(req frame, typ string) frame {
	w.t.Helper()
	f := w.call(req)
	if f["type"] != typ {
		w.t.Fatalf("%v: got %v, want %s", req["type"], f, typ)
	}
	return f
}

// fails calls and wants an error with code.
func (w *ws) fails(req frame, code string) frame {
	w.t.Helper()
	f := w.call(req)
	if f["type"] != "error" || f["code"] != code {
		w.t.Fatalf("%v: got %v, want error %s", req["type"], f, code)
	}
	if msg, _ := f["message"].(string); msg == "" {
		w.t.Fatalf("error without a message: %v", f)
	}
	return f
}

// event reads until an event of type typ, skipping other events (not replies).
func (w *ws) event(typ string) frame {
	w.t.Helper()
	for {
		f := w.read()
		if f["type"] == typ {
			return f
		}
		if _, isReply := f["ref"]; isReply {
			w.t.Fatalf("unexpected reply %v while waiting for %s", f, typ)
		}
	}
}

// quiet checks that no frame arrives for a short while.
func (w *ws) quiet(d time.Duration) {
	w.t.Helper()
	if len(w.pending) > 0 {
		w.t.Fatalf("unexpected frame %v", w.pending[0])
	}
	if f, err := w.readWithin(d); err == nil {
		w.t.Fatalf("unexpected frame %v", f)
	}
}

// closeCode reads until the server closes and returns the close code.
func (w *ws) closeCode() websocket.StatusCode {
	w.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-w.frames:
			if !ok {
				return websocket.CloseStatus(w.closeErr)
			}
		case <-timeout:
			w.t.Fatal("the server did not close the session")
		}
	}
}

func num(f frame, key string) uint64 {
	v, _ := f[key].(float64)
	return uint64(v)
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func postJSON(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}
