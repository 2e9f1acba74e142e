package conn

import (
	"context"
	"time"

	"github.com/parleychat/parley/channel"
)

// requestTimeout bounds one request; past it the client gets unavailable
// and retries (with the same key, for a send).
const requestTimeout = 10 * time.Second

// requestSlack is how much shorter than requestTimeout a request's time
// may be: requests that start within it of each other share one context.
const requestSlack = time.Second

// requestContext returns a context that ends with the session or between
// requestTimeout-requestSlack and requestTimeout from now. A context with
// its own timer for every request (and its registration with the
// session's context) was 2.6% of a loaded node's CPU; a pipelining
// session now makes one a second. One that is no longer handed out ends
// at its deadline, which releases it.
func (s *Session) requestContext() context.Context {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	if s.reqCtx != nil && s.reqCtx.Err() == nil {
		if d, _ := s.reqCtx.Deadline(); time.Until(d) > requestTimeout-requestSlack {
			return s.reqCtx
		}
	}
	// The previous one's cancel is not called: requests may still hold it.
	s.reqCtx, s.reqCancel = context.WithTimeout(s.ctx, requestTimeout)
	return s.reqCtx
}

// handle serves one request frame and queues its reply.
func (s *Session) handle(f *Frame) { s.respond(f, s.serve) }

// handleSend serves a send frame like handle, calling queued once the
// message holds its place in the commit order (see sendPipelined).
func (s *Session) handleSend(f *Frame, queued func()) {
	s.respond(f, func(ctx context.Context, f *Frame) (any, error) { return s.send(ctx, f, queued) })
}

// respond runs serve on f within the request timeout and queues its reply
// or error; a nil reply means the frame type has none.
func (s *Session) respond(f *Frame, serve func(context.Context, *Frame) (any, error)) {
	reply, err := serve(s.requestContext(), f)
	if err != nil {
		s.replyError(f.Ref, err)
		return
	}
	if reply != nil {
		s.enqueue(encode(reply))
	}
}

func (s *Session) send(ctx context.Context, f *Frame, queued func()) (any, error) {
	start := time.Now()
	sent, err := s.hub.svc.Send(ctx, channel.SendRequest{From: s.user, To: f.To, Channel: f.Channel,
		Body: f.Body, Key: f.Key, Queued: queued})
	result := "sent"
	if err != nil {
		result = channel.Code(err)
	} else if sent.Duplicate {
		result = "duplicate"
	}
	s.hub.metrics.send(result, time.Since(start))
	if err != nil {
		return nil, err
	}
	return sentFrame{Type: "sent", Ref: f.Ref, Channel: sent.Channel, Seq: sent.Seq, Ts: sent.Ts, Duplicate: sent.Duplicate}, nil
}

// serve runs a request against the channel service; a nil reply means the
// frame type has none.
func (s *Session) serve(ctx context.Context, f *Frame) (any, error) {
	svc, user := s.hub.svc, s.user
	switch f.Type {
	case "hello":
		return nil, badRequest("already said hello")
	// send is not here: handleRequests pipelines it (handleSend).
	case "create_group":
		g, err := svc.CreateGroup(ctx, user, f.Name, f.Members)
		if err != nil {
			return nil, err
		}
		return groupFrame{Type: "group", Ref: f.Ref, Channel: g.Channel, Name: g.Name, Owner: g.Owner, Members: g.Members}, nil
	case "add_members":
		_, err := svc.AddMembers(ctx, user, f.Channel, f.Members)
		return okFrame{Type: "ok", Ref: f.Ref}, err
	case "remove_members":
		_, err := svc.RemoveMembers(ctx, user, f.Channel, f.Members)
		return okFrame{Type: "ok", Ref: f.Ref}, err
	case "leave":
		return okFrame{Type: "ok", Ref: f.Ref}, svc.Leave(ctx, user, f.Channel)
	case "channels":
		chs, err := svc.Channels(ctx, user)
		return channelsFrame{Type: "channels", Ref: f.Ref, Channels: chs}, err
	case "history":
		return s.history(ctx, f)
	case "receipt":
		if _, err := svc.SetReceipt(ctx, user, f.Channel, *f.Seq, f.Status); err != nil {
			return nil, err
		}
		if f.Ref == "" {
			return nil, nil
		}
		return okFrame{Type: "ok", Ref: f.Ref}, nil
	case "status":
		st, err := svc.Status(ctx, user, f.Channel, *f.Seq)
		return statusFrame{Type: "status", Ref: f.Ref, ReceiptStatus: st}, err
	case "typing":
		return nil, s.typing(ctx, f.Channel)
	case "presence":
		users := s.hub.watch(s, f.Users)
		return presenceReply{Type: "presence", Ref: f.Ref, Users: users}, nil
	}
	return nil, badRequest("unknown type %q", f.Type)
}

func (s *Session) history(ctx context.Context, f *Frame) (any, error) {
	q := channel.HistoryQuery{Limit: 50}
	if f.Limit != nil {
		q.Limit = *f.Limit
	}
	if f.After != nil {
		q.After = *f.After
	}
	if f.Before != nil {
		q.Before, q.UseBefore = *f.Before, true
	}
	msgs, last, err := s.hub.svc.History(ctx, s.user, f.Channel, q)
	if err != nil {
		return nil, err
	}
	out := make([]messageFrame, len(msgs))
	for i := range msgs {
		out[i] = newMessageFrame(&msgs[i])
	}
	return messagesFrame{Type: "messages", Ref: f.Ref, Channel: f.Channel, Messages: out, LastSeq: last}, nil
}

// typing relays to the channel's other members; only members may type.
func (s *Session) typing(ctx context.Context, ch string) error {
	members, err := s.hub.svc.MembersForTyping(ctx, s.user, ch)
	if err != nil {
		return err
	}
	others := make([]string, 0, len(members))
	for _, m := range members {
		if m != s.user {
			others = append(others, m)
		}
	}
	s.hub.deliver(others, encode(typingFrame{Type: "typing", Channel: ch, User: s.user}))
	return nil
}

func (s *Session) replyError(ref string, err error) {
	code := channel.Code(err)
	msg := err.Error()
	if e, ok := err.(*channel.Error); ok {
		msg = e.Message
	}
	if code == channel.ErrInternal.Code {
		s.hub.log.Error("request failed", "user", s.user, "err", err)
	}
	s.enqueue(encode(errorFrame{Type: "error", Ref: ref, Code: code, Message: msg}))
}

func rateLimited() *channel.Error {
	return &channel.Error{Code: channel.ErrRateLimited.Code, Message: "too many requests: slow down"}
}
