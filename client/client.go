// Package client is a Go client for parley's protocol (PROTOCOL.md): it
// connects, sends with idempotency keys and retries them with the same key,
// reads history and receipts, and delivers events on a channel. With
// Options.Reconnect it reconnects after a lost connection and syncs every
// channel from its last seen seq, so the message events it delivers have no
// gaps and no duplicates.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Error is an error frame from the server.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrClosed is returned by requests on a closed client.
var ErrClosed = errors.New("client closed")

// Event is a frame the server pushed: message, receipt, members, typing or
// presence. Fields not used by its type are zero.
type Event struct {
	Type     string   `json:"type"`
	Channel  string   `json:"channel"`
	Seq      uint64   `json:"seq"`
	From     string   `json:"from"`
	Body     string   `json:"body"`
	Ts       int64    `json:"ts"`
	Key      string   `json:"key"`
	User     string   `json:"user"`
	Status   string   `json:"status"`
	Added    []string `json:"added"`
	Removed  []string `json:"removed"`
	Online   bool     `json:"online"`
	LastSeen int64    `json:"last_seen"`
	// Received is when the client read the frame off the socket.
	Received time.Time `json:"-"`
}

// Options configure a client.
type Options struct {
	// Token authenticates the hello. TokenFunc, if set, is called for each
	// (re)connection instead, so expired tokens can be renewed.
	Token     string
	TokenFunc func(ctx context.Context) (string, error)
	// Reconnect makes the client reconnect with backoff after the
	// connection is lost, and sync the channels it has seen.
	Reconnect bool
	// Others are base URLs of the cluster's other nodes, for a client
	// that does not reach the cluster through one address (a load
	// balancer): a reconnect that fails on one node tries the next, so
	// the client follows the cluster through the loss of its node.
	Others []string
	// NoSync turns off gap filling: message events are delivered as pushed.
	NoSync bool
	// EventBuffer is the size of the Events channel (default 1024; none
	// with OnEvent, which takes the events instead).
	EventBuffer int
	// ReadLimit bounds one server frame, -1 for no bound. The default, 32
	// MiB, holds the largest history page at the protocol's default limits:
	// 1000 messages of 4096 bytes, each byte escaped to six at worst (a
	// control character is `\u0001`). A server with a larger max_body
	// needs more.
	ReadLimit int64
	// OnEvent, if set, gets each event in place of the Events channel, on
	// the client's delivery goroutine, in order: one goroutine hop less per
	// event. It must not block for long, or it holds up the events after.
	OnEvent func(Event)
	// InlineEvents runs OnEvent on the client's read loop instead: no
	// goroutine hop at all (the load tool's clients take thousands of
	// events a second: 6% less of its CPU at 2,000 DMs a second, and a
	// 5,000-member group's last member p99 9% lower). It needs OnEvent,
	// NoSync and no Reconnect, so that there is nothing to order the events
	// with. OnEvent must then be quick and must not wait for this client's
	// replies: they are read by the same loop, after it returns.
	InlineEvents bool
}

// Client is a connection to one parley node.
type Client struct {
	urls []string // the node Dial was given first, then Options.Others
	cur  int      // urls[cur] is the node connected or being tried (the run goroutine's)
	opt  Options
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex    // guards the fields below
	link    *link         // the connection and its write queue; nil while disconnected
	up      chan struct{} // closed while connected; replaced when the connection drops
	user    string
	session string
	node    string
	pending map[string]chan reply
	nextRef uint64
	lastSeq map[string]uint64 // per channel, the last message event delivered
	err     error             // why the client stopped
	lost    error             // why the last connection dropped

	inbox  *queue // read loop -> delivery goroutine; unbounded, so a reply is never stuck behind pushes
	events chan Event
	done   chan struct{}
}

// inboxItem is a pushed event, or (resync) the news of a new connection.
type inboxItem struct {
	ev     Event
	resync bool
}

// WSURL turns a base URL (http://host:port) into the WebSocket endpoint.
func WSURL(base string) string {
	base = strings.TrimRight(base, "/")
	switch {
	case strings.HasPrefix(base, "http://"):
		base = "ws://" + strings.TrimPrefix(base, "http://")
	case strings.HasPrefix(base, "https://"):
		base = "wss://" + strings.TrimPrefix(base, "https://")
	case !strings.HasPrefix(base, "ws://") && !strings.HasPrefix(base, "wss://"):
		base = "ws://" + base
	}
	if !strings.HasSuffix(base, "/v1/ws") {
		base += "/v1/ws"
	}
	return base
}

// Dial connects to base (http://host:port or a ws:// URL) and says hello.
func Dial(ctx context.Context, base string, opt Options) (*Client, error) {
	// A buffered event is ~200 bytes: 1024 of them are 200 KiB a client,
	// which a client whose OnEvent takes the events never uses (a load
	// tool holding 5,000 sessions held a gigabyte of them).
	if opt.EventBuffer == 0 && opt.OnEvent == nil {
		opt.EventBuffer = 1024
	}
	if opt.ReadLimit == 0 {
		opt.ReadLimit = 32 << 20
	}
	if opt.InlineEvents && (opt.OnEvent == nil || !opt.NoSync || opt.Reconnect) {
		return nil, errors.New("client: InlineEvents needs OnEvent and NoSync, without Reconnect")
	}
	cctx, stop := context.WithCancel(context.Background())
	urls := []string{WSURL(base)}
	for _, o := range opt.Others {
		urls = append(urls, WSURL(o))
	}
	c := &Client{urls: urls, opt: opt, ctx: cctx, stop: stop, up: make(chan struct{}),
		pending: map[string]chan reply{}, lastSeq: map[string]uint64{},
		inbox: newQueue(), events: make(chan Event, opt.EventBuffer), done: make(chan struct{})}
	ws, err := c.connect(ctx)
	if err != nil {
		stop()
		return nil, err
	}
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		c.deliver()
	}()
	go func() {
		c.run(ws)
		c.inbox.close()
		<-delivered
		close(c.events)
		close(c.done)
	}()
	return c, nil
}

// connect opens a WebSocket and completes the hello.
func (c *Client) connect(ctx context.Context) (*websocket.Conn, error) {
	token := c.opt.Token
	if c.opt.TokenFunc != nil {
		var err error
		if token, err = c.opt.TokenFunc(ctx); err != nil {
			return nil, err
		}
	}
	var conn *corkedConn
	ws, _, err := websocket.Dial(ctx, c.urls[c.cur], &websocket.DialOptions{HTTPClient: dialer(&conn)})
	if err != nil {
		return nil, err
	}
	if conn == nil { // not dialed by our transport: should not happen
		ws.CloseNow()
		return nil, errors.New("client: the connection was not dialed through the client's transport")
	}
	ws.SetReadLimit(c.opt.ReadLimit)
	hello, _ := json.Marshal(map[string]string{"type": "hello", "token": token})
	if err := ws.Write(ctx, websocket.MessageText, hello); err != nil {
		ws.CloseNow()
		return nil, err
	}
	_, raw, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("hello: %w", err)
	}
	var w struct{ Type, User, Session, Node string }
	if err := json.Unmarshal(raw, &w); err != nil || w.Type != "welcome" {
		ws.CloseNow()
		return nil, fmt.Errorf("hello: unexpected reply %s", raw)
	}
	c.mu.Lock()
	c.link, c.user, c.session, c.node = &link{ws: ws, conn: conn}, w.User, w.Session, w.Node
	close(c.up)
	c.mu.Unlock()
	return ws, nil
}

// User, Session and Node are from the latest welcome.
func (c *Client) User() string    { c.mu.Lock(); defer c.mu.Unlock(); return c.user }
func (c *Client) Session() string { c.mu.Lock(); defer c.mu.Unlock(); return c.session }
func (c *Client) Node() string    { c.mu.Lock(); defer c.mu.Unlock(); return c.node }

// Events delivers pushed frames (unless Options.OnEvent takes them); it is
// closed when the client stops.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the client has stopped; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client stopped, once Done is closed.
func (c *Client) Err() error { c.mu.Lock(); defer c.mu.Unlock(); return c.err }

// Close ends the connection and stops reconnecting.
func (c *Client) Close() error {
	c.stop()
	c.mu.Lock()
	l := c.link
	c.mu.Unlock()
	if l != nil {
		l.ws.Close(websocket.StatusNormalClosure, "bye")
	}
	<-c.done
	return nil
}

// run reads frames until the connection drops, then reconnects or stops.
func (c *Client) run(ws *websocket.Conn) {
	for {
		err := lostBecause(c.readLoop(ws), c.writeErr())
		// The socket goes too: a read that failed on this side (a frame
		// over ReadLimit) left it open, and the server's session with it.
		ws.CloseNow()
		c.dropped(err)
		if !c.opt.Reconnect || c.ctx.Err() != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		if ws = c.reconnect(); ws == nil {
			return
		}
		c.inbox.push(inboxItem{resync: true})
	}
}

// lostBecause is why a connection was lost, from the error that ended its
// read loop and the error of a write that failed on it, if one did. One
// side's failure closes the socket, and the other side then fails with
// "use of closed network connection": the cause is the other error. A
// failed write closes it in the client's writer; coder/websocket closes
// it on the read side when a pong cannot be written within 5 s (the
// client's own write holds the socket, or the machine is starved).
func lostBecause(readErr, writeErr error) error {
	switch {
	case writeErr == nil:
		return readErr
	case errors.Is(writeErr, net.ErrClosed) && !errors.Is(readErr, net.ErrClosed):
		return fmt.Errorf("read: %w (then write: %v)", readErr, writeErr)
	default:
		return fmt.Errorf("write: %w (then read: %v)", writeErr, readErr)
	}
}

// writeErr is the error of the current connection's failed write, if one
// failed.
func (c *Client) writeErr() error {
	c.mu.Lock()
	l := c.link
	c.mu.Unlock()
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// dropped fails the requests waiting on the lost connection, which
// ended with err.
func (c *Client) dropped(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lost = err
	c.link = nil
	c.up = make(chan struct{})
	for ref, ch := range c.pending {
		close(ch)
		delete(c.pending, ref)
	}
}

func (c *Client) reconnect() *websocket.Conn {
	backoff := 50 * time.Millisecond
	for {
		// Half the backoff and a random part of the other half: the
		// clients of a node that died do not all come back at once.
		wait := backoff/2 + mrand.N(backoff/2+1)
		select {
		case <-c.ctx.Done():
			return nil
		case <-time.After(wait):
		}
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		ws, err := c.connect(ctx)
		cancel()
		if err == nil {
			return ws
		}
		c.cur = (c.cur + 1) % len(c.urls) // the next node, if there are others
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Client) readLoop(ws *websocket.Conn) error {
	// Each frame is read into one reused buffer (an event's fields are
	// copied out as it is decoded; a reply is copied for its caller), and
	// without a context: a cancellable one costs every read a hook, and
	// Close ends the read by closing the connection.
	var buf bytes.Buffer
	for {
		_, r, err := ws.Reader(context.Background())
		if err != nil {
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		c.frame(buf.Bytes(), time.Now())
		if buf.Cap() > 16<<10 {
			buf = bytes.Buffer{} // a large frame's buffer is not kept
		}
	}
}

// serverFrame is the fields of any server frame the client routes by,
// and a sent frame's.
type serverFrame struct {
	Event
	Ref       string `json:"ref"`
	Duplicate bool   `json:"duplicate"`
}

// reply is a request's answer: the frame as it came, whether it is an
// error frame, and a sent frame's fields, decoded once (it is every
// send's answer).
type reply struct {
	raw   json.RawMessage
	isErr bool
	sent  *Sent
}

var jsonUnmarshal = json.Unmarshal

// frame routes one server frame: a reply to its waiting request, anything
// else to Events. raw is reused once frame returns.
func (c *Client) frame(raw []byte, received time.Time) {
	// One decoding serves both: a reply goes to its request as raw JSON
	// (its caller decodes its own fields), anything else is an event.
	var f serverFrame
	if decodeFrame(raw, &f) != nil {
		return
	}
	if f.Ref != "" && f.Type != "message" {
		c.mu.Lock()
		ch := c.pending[f.Ref]
		delete(c.pending, f.Ref)
		c.mu.Unlock()
		if ch != nil {
			r := reply{raw: bytes.Clone(raw), isErr: f.Type == "error"}
			if f.Type == "sent" {
				r.sent = &Sent{Channel: f.Channel, Seq: f.Seq, Ts: f.Ts, Duplicate: f.Duplicate}
			}
			ch <- r
			return
		}
	}
	f.Event.Received = received
	if c.opt.InlineEvents {
		c.opt.OnEvent(f.Event)
		return
	}
	c.inbox.push(inboxItem{ev: f.Event})
}

func (c *Client) emit(ev Event) {
	if c.opt.OnEvent != nil {
		c.opt.OnEvent(ev)
		return
	}
	select {
	case c.events <- ev:
	case <-c.ctx.Done():
	}
}

// Request sends a frame (a ref is added) and waits for its reply. An error
// frame is returned as *Error.
func (c *Client) Request(ctx context.Context, frame map[string]any) (json.RawMessage, error) {
	return c.request(ctx, func(ref string) ([]byte, error) {
		frame["ref"] = ref
		return json.Marshal(frame)
	})
}

// request is Request with the frame encoded by encode, given the ref.
func (c *Client) request(ctx context.Context, encode func(ref string) ([]byte, error)) (json.RawMessage, error) {
	r, err := c.exchange(ctx, encode)
	return r.raw, err
}

// exchange is request, returning the whole reply.
func (c *Client) exchange(ctx context.Context, encode func(ref string) ([]byte, error)) (reply, error) {
	c.mu.Lock()
	l, up := c.link, c.up
	c.nextRef++
	ref := "r" + strconv.FormatUint(c.nextRef, 10)
	answer := make(chan reply, 1)
	if l != nil {
		c.pending[ref] = answer
	}
	c.mu.Unlock()
	if l == nil {
		select { // wait for a reconnect, then let the caller retry
		case <-up:
			return reply{}, &Error{Code: "unavailable", Message: "reconnected: retry"}
		case <-ctx.Done():
			return reply{}, ctx.Err()
		case <-c.done:
			return reply{}, ErrClosed
		}
	}
	raw, err := encode(ref)
	if err != nil {
		c.forget(ref)
		return reply{}, err
	}
	if err := l.write(raw); err != nil {
		c.forget(ref)
		return reply{}, err
	}
	select {
	case r, ok := <-answer:
		if !ok {
			return reply{}, c.lostError()
		}
		if r.isErr {
			var e Error
			if err := json.Unmarshal(r.raw, &e); err != nil {
				return reply{}, fmt.Errorf("an error frame that does not decode: %w", err)
			}
			return reply{}, &e
		}
		return r, nil
	case <-ctx.Done():
		c.forget(ref)
		return reply{}, ctx.Err()
	}
}

func (c *Client) forget(ref string) {
	c.mu.Lock()
	delete(c.pending, ref)
	c.mu.Unlock()
}

// Fire sends a frame that has no reply (typing, or a receipt without ref).
// It returns once the frame is written or queued behind others; ctx is
// not used.
func (c *Client) Fire(ctx context.Context, frame map[string]any) error {
	c.mu.Lock()
	l := c.link
	c.mu.Unlock()
	if l == nil {
		return &Error{Code: "unavailable", Message: "not connected"}
	}
	raw, _ := json.Marshal(frame)
	return l.write(raw)
}

// NewKey returns a fresh idempotency key.
func NewKey() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// lostError is a request's error when its connection dropped before the
// reply: retry, unless the reply was what dropped it, a frame over
// Options.ReadLimit, which a retry would only fetch again.
func (c *Client) lostError() error {
	c.mu.Lock()
	lost := c.lost
	c.mu.Unlock()
	if errors.Is(lost, websocket.ErrMessageTooBig) {
		return &Error{Code: "too_large", Message: fmt.Sprintf("a server frame exceeded the client's ReadLimit (%d bytes)", c.opt.ReadLimit)}
	}
	return &Error{Code: "unavailable", Message: "connection lost: retry"}
}
