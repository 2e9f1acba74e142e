package conn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Close codes a session may end with (docs/protocol.md lists them).
const (
	CloseIdle           = 4000 // no frame or pong for IdleTimeout
	CloseUnauthorized   = 4001 // missing, bad or expired token, or no hello in time
	CloseSlowConsumer   = 4008 // the session's queue filled up: reconnect and sync
	CloseTooManySession = 4009 // the user holds too many sessions on this node
	CloseGoingAway      = 4010 // the node is shutting down: reconnect, to another node if need be
)

// Session is one live WebSocket of a user.
type Session struct {
	id      string
	user    string
	hub     *Hub
	ws      *websocket.Conn
	conn    *corkConn     // under ws: gathers a burst of frames into one write
	limiter *rate.Limiter // shared by the user's sessions; set by register

	out      outQueue      // frames to write, bounded
	reqs     requestQueue  // requests to handle in order, bounded
	sends    chan struct{} // a token per send in flight; made by the handler on the first send
	lastSeen atomic.Int64  // unix ns of the last frame or pong received
	pingSlot uint32        // which tick of the hub's ping loop pings it

	// watching is the users whose presence this session asked for; guarded
	// by hub.mu.
	watching map[string]struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	reqMu     sync.Mutex         // guards reqCtx and reqCancel
	reqCtx    context.Context    // shared by requests that start close together (requestContext)
	reqCancel context.CancelFunc // reqCtx's; it ends at its deadline or with ctx
	closeOnce sync.Once
	wg        sync.WaitGroup // the request handler
}

func newSessionID() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ServeWS upgrades the request and starts the session on its own goroutine:
// the request's goroutine, its stack and net/http's buffers are let go.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request) {
	var s *Session
	up := &upgrader{ResponseWriter: w}
	ws, err := websocket.Accept(up, r, &websocket.AcceptOptions{
		OriginPatterns: h.opt.Origins,
		OnPongReceived: func(context.Context, []byte) {
			if s != nil {
				s.lastSeen.Store(time.Now().UnixNano())
			}
		},
	})
	if err != nil {
		return // Accept has answered the request
	}
	// A new session is work, hello and all: a node that has gone down to
	// one P (internal/idleprocs) takes its clients' connecting on all of
	// them, not only their first frame after the hello.
	h.busy()
	ws.SetReadLimit(int64(h.opt.MaxFrame))
	go func() {
		user, ok := h.hello(ws)
		if !ok {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		s = &Session{id: newSessionID(), user: user, hub: h, ws: ws, conn: up.conn, ctx: ctx, cancel: cancel,
			out: outQueue{max: h.opt.SendQueue}, watching: map[string]struct{}{}, pingSlot: h.pingSeq.Add(1) % pingSlots}
		s.lastSeen.Store(time.Now().UnixNano())
		// The welcome is the first frame, and leaves once every node can
		// push to the session (waitDirectory). It is queued before the
		// session is registered, with the writer held until then, so what
		// is pushed meanwhile queues behind it.
		s.out.hold(outFrame{b: encode(welcomeFrame{Type: "welcome", User: user, Session: s.id, Node: h.opt.NodeID})})
		if !h.register(s) {
			cancel()
			ws.Close(CloseTooManySession, "too many sessions for this user, or the node is closing")
			return
		}
		h.waitDirectory()
		go s.writeQueued()
		// Checking the token grew this goroutine's stack; the session reads
		// on a fresh one, which stays small while the session is idle.
		go s.run()
	}()
}

// hello waits for the first frame, which must be a hello with a valid
// token; otherwise the session is closed with 4001.
func (h *Hub) hello(ws *websocket.Conn) (string, bool) {
	// A Read whose context expires drops the connection without a close
	// code, so the deadline closes the session itself.
	late := time.AfterFunc(h.opt.HelloTimeout, func() { ws.Close(CloseUnauthorized, "no hello in time") })
	typ, raw, err := ws.Read(context.Background())
	if !late.Stop() || err != nil {
		ws.CloseNow()
		return "", false
	}
	f, ferr := DecodeFrame(raw)
	if typ != websocket.MessageText || ferr != nil || f.Type != "hello" {
		ws.Close(CloseUnauthorized, "the first frame must be a hello with a token")
		return "", false
	}
	user, err := h.issuer.Verify(f.Token)
	if err != nil {
		ws.Close(CloseUnauthorized, "bad or expired token")
		return "", false
	}
	return user, true
}

// run serves the session: the caller's goroutine reads; while frames wait
// to be written one goroutine writes them, and while requests wait one
// handles them in order. It returns when the session ends.
func (s *Session) run() {
	s.readLoop()
	s.conn.end()
	s.hub.unregister(s)
	s.cancel()
	s.wg.Wait()
	s.ws.CloseNow()
}

func (s *Session) readLoop() {
	for {
		// No context: a session ends by closing its connection (closeWith),
		// and a Read with one would register and drop a cancel hook each time.
		typ, raw, err := s.ws.Read(context.Background())
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				s.hub.log.Debug("session sent an oversized frame", "user", s.user)
			}
			return
		}
		s.lastSeen.Store(time.Now().UnixNano())
		s.hub.busy()
		if typ != websocket.MessageText {
			s.replyError("", badRequest("binary frames are not supported: send JSON text frames"))
			continue
		}
		f, ferr := DecodeFrame(raw)
		ref := ""
		if f != nil {
			ref = f.Ref
		}
		if ferr != nil {
			s.replyError(ref, ferr)
			continue
		}
		if f.Type == "ping" { // answered here, so it measures the session, not the queue
			s.enqueue(encode(okFrame{Type: "pong", Ref: f.Ref}))
			continue
		}
		if !s.limiter.Allow() {
			s.hub.rateLimited.Add(1)
			s.replyError(ref, rateLimited())
			continue
		}
		start, ok := s.reqs.push(f)
		if !ok {
			s.hub.rateLimited.Add(1)
			s.replyError(ref, rateLimited())
			continue
		}
		if start {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handleRequests()
			}()
		}
	}
}

// handleRequests serves queued requests in order and ends when none is
// left: an idle session keeps no goroutine for them.
func (s *Session) handleRequests() {
	for {
		f, ok := s.reqs.pop()
		if !ok || s.ctx.Err() != nil {
			return
		}
		if f.Type == "send" {
			s.sendPipelined(f)
			continue
		}
		s.handle(f)
	}
}

// maxSendsInFlight bounds a session's sends waiting for their commit.
const maxSendsInFlight = 64

// sendPipelined starts a send and returns once it holds its place in its
// channel's commit order (or has failed): the next request need not wait
// for the commit, and a client's pipelined sends still commit in the order
// it sent them.
func (s *Session) sendPipelined(f *Frame) {
	if s.sends == nil {
		s.sends = make(chan struct{}, maxSendsInFlight)
	}
	select {
	case s.sends <- struct{}{}:
	case <-s.ctx.Done():
		return
	}
	queued, done := make(chan struct{}), make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sends }()
		defer close(done)
		s.handleSend(f, func() { close(queued) })
	}()
	select {
	case <-queued:
	case <-done:
	case <-s.ctx.Done():
	}
}

// writeQueued writes the queued frames, a burst at a time in one write with
// a deadline, and ends when the queue is empty: an idle session keeps no
// writer goroutine.
func (s *Session) writeQueued() {
	// The frames for one session tend to come in bursts from several
	// goroutines at once (the acks of one committed entry, the messages
	// it delivers). Letting those that are ready run first puts the burst
	// in one write: at full throughput that halved the nodes' writes per
	// message (1.45 to 0.72) and the load tool's reads (1.0 to 0.32), and
	// raised acked sends from ~17.5k to ~24k a second (`parley bench
	// throughput`, fresh three-node clusters, interleaved runs).
	runtime.Gosched()
	for {
		frames := s.out.takeOrIdle()
		if frames == nil {
			return
		}
		if !s.gather(frames) || !s.finish(frames) {
			return // the queue stays marked busy: nothing more is written
		}
	}
}

// gather writes frames into the corked connection (no syscall, no timer
// each); false if the session failed, and the queue stays marked busy:
// nothing more is written.
func (s *Session) gather(frames []outFrame) bool {
	s.hub.busy()
	// They go out in one write, which gives up after WriteTimeout (half
	// to all of it).
	s.conn.cork(s.hub.opt.WriteTimeout)
	for _, f := range frames {
		var err error
		if f.control {
			// Straight into the corked connection, in one write: whole
			// as coder/websocket's own control frames are, and between
			// two of its data frames, which only the writer writes.
			err = s.conn.writeControl(f.b)
		} else {
			err = s.ws.Write(context.Background(), websocket.MessageText, f.b)
		}
		if err != nil {
			s.conn.uncork()
			s.writeFailed(err)
			return false
		}
	}
	return true
}

// finish writes what gather gathered, waiting for the socket (up to
// WriteTimeout), and counts the deliveries; false if the session failed.
func (s *Session) finish(frames []outFrame) bool {
	if err := s.conn.uncork(); err != nil {
		s.writeFailed(err)
		return false
	}
	s.delivered(frames)
	return true
}

func (s *Session) delivered(frames []outFrame) {
	for _, f := range frames {
		if !f.control {
			s.hub.delivered.Add(1)
			s.hub.metrics.delivered(f.ts)
		}
	}
}

// writeNow is a session's writer run by a fan-out's goroutine (writeAll),
// which writes one frame to many sessions in turn: what is queued goes out
// without waiting on the socket. If the socket does not take it all, or
// more frames came meanwhile, a writer goroutine of the session's own
// carries on, as writeQueued.
func (s *Session) writeNow() {
	frames := s.out.takeOrIdle()
	if frames == nil || !s.gather(frames) {
		return
	}
	done, err := s.conn.tryUncork()
	switch {
	case err != nil:
		s.writeFailed(err)
	case !done:
		go func() {
			if s.finish(frames) {
				s.writeQueued()
			}
		}()
	default:
		s.delivered(frames)
		if !s.out.release() {
			go s.writeQueued()
		}
	}
}

// writeFailed ends the session after a failed write: the client went away,
// or (counted) it stopped reading and a write made no progress for
// WriteTimeout.
func (s *Session) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.hub.writeTimeouts.Add(1)
	}
	s.ws.CloseNow()
}

// ping checks the session's liveness (called by the hub's ping loop): dead
// after IdleTimeout without a frame or pong, else pinged unless it was
// heard from within the last half PingInterval (a client that sends needs
// no ping to show it is there). Half: a pong to the last ping is a
// PingInterval old at the next check, so a quiet client is still pinged
// every PingInterval and has as long as before to answer.
func (s *Session) ping() {
	quiet := time.Since(time.Unix(0, s.lastSeen.Load()))
	if quiet > s.hub.opt.IdleTimeout {
		if s.closeWith(CloseIdle, "no frame or pong for too long") {
			s.hub.idleCloses.Add(1)
		}
		return
	}
	if quiet < s.hub.opt.PingInterval/2 {
		return
	}
	// The ping is queued like any frame and goes out with the next burst.
	// (coder/websocket's Ping would cost a goroutine, two timers and a map
	// entry per ping, waiting for the pong, which needs no waiting: the
	// pong updates lastSeen as it arrives.)
	s.enqueueFrame(outFrame{b: pingFrame, control: true})
}

// pingFrame is a WebSocket ping with no payload, as a server sends it
// (unmasked).
var pingFrame = []byte{0x89, 0x00}

// outFrame is a frame to write: a text message's payload or, if control,
// a whole WebSocket control frame; ts, for a message, is its commit time.
type outFrame struct {
	b       []byte
	ts      int64
	control bool
}

// enqueue queues a frame without blocking; a session whose queue is full
// has fallen behind and is closed, so it never slows anyone else.
func (s *Session) enqueue(frame []byte) { s.enqueueFrame(outFrame{b: frame}) }

func (s *Session) enqueueFrame(f outFrame) {
	if s.queue(f) {
		go s.writeQueued() // ends when the queue empties or the socket fails
	}
}

// queue adds f to the session's queue, or closes a session whose queue is
// full; start is true when no writer runs and the caller must start one.
func (s *Session) queue(f outFrame) (start bool) {
	start, ok := s.out.push(f)
	if !ok {
		if s.closeWith(CloseSlowConsumer, "too slow: reconnect and sync with history") {
			s.hub.slowCloses.Add(1)
		}
	}
	return start
}

// closeWith closes the session with a code without blocking the caller;
// only the first call closes, and reports true.
func (s *Session) closeWith(code int, reason string) bool {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.conn.end() // before the close frame
		go func() {
			s.ws.Close(websocket.StatusCode(code), reason)
			s.cancel()
		}()
	})
	return first
}
