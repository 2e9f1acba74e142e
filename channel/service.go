package channel

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/parleychat/parley/cluster"
	"github.com/parleychat/parley/store"
)

// Router commits commands to shards and runs reads where the shard's state
// is current. cluster.Node is the real one: it forwards to the shard's
// leader when that is another node.
type Router interface {
	Shards() int
	// Propose commits cmd and returns the state machine's result: a Result
	// when applied on this node, its JSON when it came from another.
	Propose(ctx context.Context, shard int, cmd []byte) (any, error)
	// Read runs an encoded read (ExecRead) on a node whose copy of the
	// shard has applied everything committed before the call.
	Read(ctx context.Context, shard int, op []byte) ([]byte, error)
	// ReadLeaderState runs it on the shard's leader as it is, without
	// confirming leadership first: possibly a little stale, and cheaper.
	ReadLeaderState(ctx context.Context, shard int, op []byte) ([]byte, error)
	IsLeader(shard int) bool
	// AppliedIndex is the last log index this node's copy of the shard
	// has applied.
	AppliedIndex(shard int) uint64
}

// Options are the service's limits and policies.
type Options struct {
	MaxBody          int  // bytes of a message body
	MaxGroup         int  // members of a group
	OpenRegistration bool // POST /v1/register allowed
	BcryptCost       int
}

// DefaultOptions are the limits of PROTOCOL.md.
func DefaultOptions() Options {
	return Options{MaxBody: 4096, MaxGroup: 5000, OpenRegistration: true, BcryptCost: bcrypt.DefaultCost}
}

// maxName is the longest group name in bytes.
const maxName = 128

// Service is the node's API to the channel state: what the protocol layer
// calls. Writes go through Raft via the Router; reads are served from the
// local database after the Router linearized them. Every error is an *Error
// with a protocol code.
type Service struct {
	r    Router
	db   pebble.Reader
	opt  Options
	log  *slog.Logger
	keys []keys
	now  func() time.Time
}

// NewService returns the API over the shards of r, whose state is in st.
func NewService(r Router, st *store.Store, opt Options, log *slog.Logger) *Service {
	s := &Service{r: r, db: st.DB(), opt: opt, log: log, now: time.Now}
	for shard := range r.Shards() {
		s.keys = append(s.keys, newKeys(shard))
	}
	return s
}

func (s *Service) shardOf(id string) int { return cluster.ShardOf(id, len(s.keys)) }

// propose commits c on shard and returns the state machine's result.
func (s *Service) propose(ctx context.Context, shard int, c *Command) (Result, error) {
	v, err := s.r.Propose(ctx, shard, encodeCommand(c))
	if err != nil {
		return Result{}, wrapRouterErr(err)
	}
	var res Result
	switch v := v.(type) {
	case Result:
		res = v
	case []byte:
		if err := decodeValue(v, &res); err != nil {
			return Result{}, errorf(ErrInternal, "shard %d result: %v", shard, err)
		}
	default:
		return Result{}, errorf(ErrInternal, "shard %d returned %T", shard, v)
	}
	if res.Err != nil {
		return res, res.Err
	}
	return res, nil
}

func wrapRouterErr(err error) error {
	if errors.Is(err, cluster.ErrUnavailable) {
		return errorf(ErrUnavailable, "%v; retry", err)
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return errorf(ErrInternal, "%v", err)
}

// Register creates an account.
func (s *Service) Register(ctx context.Context, user, password string) error {
	if !s.opt.OpenRegistration {
		return errorf(ErrForbidden, "registration is closed")
	}
	if err := checkUser("user", user); err != nil {
		return err
	}
	if len(password) < 8 || len(password) > 256 {
		return errorf(ErrBadRequest, "password must be 8-256 bytes, got %d", len(password))
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.opt.BcryptCost)
	if err != nil {
		return errorf(ErrInternal, "hash password: %v", err)
	}
	_, err = s.propose(ctx, s.shardOf(user), &Command{Op: opRegister, User: user, Hash: hash, Ts: s.now().UnixMilli()})
	return err
}

// dummyHash keeps a login for an unknown user as slow as for a known one.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("parley-no-such-user"), bcrypt.MinCost)

// Authenticate checks a user's password.
func (s *Service) Authenticate(ctx context.Context, user, password string) error {
	bad := errorf(ErrUnauthorized, "wrong user or password")
	if !ValidUser(user) {
		return bad
	}
	var acc account
	if err := s.read(ctx, s.shardOf(user), readOp{Op: "account", User: user}, &acc); err != nil {
		return err
	}
	if acc.Hash == nil {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return bad
	}
	if bcrypt.CompareHashAndPassword(acc.Hash, []byte(password)) != nil {
		return bad
	}
	return nil
}

// Group describes a group channel.
type Group struct {
	Channel string   `json:"channel"`
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
}

// CreateGroup makes a group owned by creator with the given members.
func (s *Service) CreateGroup(ctx context.Context, creator, name string, members []string) (Group, error) {
	if err := checkText("name", name, maxName); err != nil {
		return Group{}, err
	}
	if err := checkUsers(members); err != nil {
		return Group{}, err
	}
	if len(members) > s.opt.MaxGroup {
		return Group{}, errorf(ErrTooLarge, "a group holds at most %d members", s.opt.MaxGroup)
	}
	id := newGroupID()
	shard := s.shardOf(id)
	res, err := s.propose(ctx, shard, &Command{Op: opCreate, User: creator, Channel: id, Name: name,
		Members: members, Limit: s.opt.MaxGroup, Ts: s.now().UnixMilli()})
	if err != nil {
		return Group{}, err
	}
	s.indexThenClear(ctx, shard, res.Outbox)
	return Group{Channel: id, Name: name, Owner: res.Owner, Members: res.Members}, nil
}

func newGroupID() string {
	var b [12]byte
	rand.Read(b[:])
	return "g:" + base64.RawURLEncoding.EncodeToString(b[:])
}

func checkUsers(users []string) error {
	for _, u := range users {
		if err := checkUser("members", u); err != nil {
			return err
		}
	}
	return nil
}

func checkGroupChannel(ch string) error {
	if err := checkChannel(ch); err != nil {
		return err
	}
	if !ValidGroupID(ch) {
		return errorf(ErrBadRequest, "%s is a direct channel: its members are fixed", ch)
	}
	return nil
}

// AddMembers adds users to a group; any member may. It returns who was new.
func (s *Service) AddMembers(ctx context.Context, by, ch string, members []string) ([]string, error) {
	if err := checkGroupChannel(ch); err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, errorf(ErrBadRequest, "members is empty")
	}
	if err := checkUsers(members); err != nil {
		return nil, err
	}
	return s.changeMembers(ctx, &Command{Op: opAdd, User: by, Channel: ch, Members: members, Limit: s.opt.MaxGroup})
}

// RemoveMembers removes users from a group; only the owner removes others.
func (s *Service) RemoveMembers(ctx context.Context, by, ch string, members []string) ([]string, error) {
	if err := checkGroupChannel(ch); err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, errorf(ErrBadRequest, "members is empty")
	}
	if err := checkUsers(members); err != nil {
		return nil, err
	}
	return s.changeMembers(ctx, &Command{Op: opRemove, User: by, Channel: ch, Members: members})
}

// Leave removes user from a group; the owner's role passes to the
// longest-standing member.
func (s *Service) Leave(ctx context.Context, user, ch string) error {
	if err := checkGroupChannel(ch); err != nil {
		return err
	}
	_, err := s.changeMembers(ctx, &Command{Op: opLeave, User: user, Channel: ch})
	return err
}

func (s *Service) changeMembers(ctx context.Context, c *Command) ([]string, error) {
	c.Ts = s.now().UnixMilli()
	shard := s.shardOf(c.Channel)
	res, err := s.propose(ctx, shard, c)
	if err != nil {
		return nil, err
	}
	s.indexThenClear(ctx, shard, res.Outbox)
	return append(res.Added, res.Removed...), nil
}

// SendRequest is one message to send: To (a user, for a DM) or Channel.
type SendRequest struct {
	From, To, Channel, Body, Key string

	// Queued, if set, is called once the message holds its place in its
	// channel's commit order, usually long before the commit. A caller that
	// waits for it (or for Send to return) before its next Send has its
	// messages committed in the order it sent them.
	Queued func()
}

// Sent is the outcome of a committed send.
type Sent struct {
	Channel   string `json:"channel"`
	Seq       uint64 `json:"seq"`
	Ts        int64  `json:"ts"`
	Duplicate bool   `json:"duplicate"`
}

// Send commits a message. It returns only after a quorum has it on disk. A
// send with the key of an earlier one by the same sender to the same channel
// commits nothing and returns the first one's seq and ts.
func (s *Service) Send(ctx context.Context, req SendRequest) (Sent, error) {
	ch, err := s.target(req)
	if err != nil {
		return Sent{}, err
	}
	if err := checkText("body", req.Body, s.opt.MaxBody); err != nil {
		return Sent{}, err
	}
	if err := checkKey(req.Key); err != nil {
		return Sent{}, err
	}
	shard := s.shardOf(ch)
	if req.Queued != nil {
		var once sync.Once
		ctx = cluster.WithQueued(ctx, func() { once.Do(req.Queued) })
	}
	res, err := s.propose(ctx, shard, &Command{Op: opSend, User: req.From, Channel: ch,
		Body: req.Body, Key: req.Key, Ts: s.now().UnixMilli()})
	if err != nil {
		return Sent{}, err
	}
	s.indexThenClear(ctx, shard, res.Outbox)
	return Sent{Channel: ch, Seq: res.Seq, Ts: res.Ts, Duplicate: res.Duplicate}, nil
}

// target resolves a send's channel from To or Channel.
func (s *Service) target(req SendRequest) (string, error) {
	switch {
	case req.To != "" && req.Channel != "":
		return "", errorf(ErrBadRequest, "give either to or channel, not both")
	case req.To != "":
		if err := checkUser("to", req.To); err != nil {
			return "", err
		}
		if req.To == req.From {
			return "", errorf(ErrBadRequest, "cannot send a direct message to yourself")
		}
		return DM(req.From, req.To), nil
	case req.Channel != "":
		return req.Channel, checkChannel(req.Channel)
	}
	return "", errorf(ErrBadRequest, "missing to or channel")
}

// HistoryQuery selects a page of history: the oldest messages above After,
// or with UseBefore the newest below Before; Limit 1-1000 (0 means 50).
type HistoryQuery struct {
	After, Before uint64
	UseBefore     bool
	Limit         int
}

// History returns a page of a channel's messages, ascending, and its last seq.
func (s *Service) History(ctx context.Context, user, ch string, q HistoryQuery) ([]Message, uint64, error) {
	if err := checkChannel(ch); err != nil {
		return nil, 0, err
	}
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Limit < 1 || q.Limit > 1000 {
		return nil, 0, errorf(ErrBadRequest, "limit must be 1-1000, got %d", q.Limit)
	}
	if q.Before > 0 {
		q.UseBefore = true
	}
	if q.After > 0 && q.UseBefore {
		return nil, 0, errorf(ErrBadRequest, "give after or before, not both")
	}
	var page historyPage
	op := readOp{Op: "history", User: user, Channel: ch, After: q.After, Before: q.Before, UseBefore: q.UseBefore, Limit: q.Limit}
	if err := s.read(ctx, s.shardOf(ch), op, &page); err != nil {
		return nil, 0, err
	}
	return page.Messages, page.LastSeq, nil
}

// ChannelInfo is one entry of a user's channel list.
type ChannelInfo struct {
	Channel      string `json:"channel"`
	Kind         string `json:"kind"`
	Name         string `json:"name"`
	LastSeq      uint64 `json:"last_seq"`
	DeliveredSeq uint64 `json:"delivered_seq"`
	ReadSeq      uint64 `json:"read_seq"`
}

// Channels lists every channel user belongs to or has a DM in, the most
// recently active first.
func (s *Service) Channels(ctx context.Context, user string) ([]ChannelInfo, error) {
	var ids []string
	if err := s.read(ctx, s.shardOf(user), readOp{Op: "user_channels", User: user}, &ids); err != nil {
		return nil, err
	}
	byShard := map[int][]string{}
	for _, ch := range ids {
		byShard[s.shardOf(ch)] = append(byShard[s.shardOf(ch)], ch)
	}
	var entries []channelEntry
	for shard, chs := range byShard {
		var part []channelEntry
		if err := s.read(ctx, shard, readOp{Op: "channel_infos", User: user, Channels: chs}, &part); err != nil {
			return nil, err
		}
		entries = append(entries, part...)
	}
	slices.SortFunc(entries, func(a, b channelEntry) int {
		return cmp.Or(cmp.Compare(b.LastTs, a.LastTs), cmp.Compare(a.Channel, b.Channel))
	})
	out := make([]ChannelInfo, len(entries))
	for i, e := range entries {
		out[i] = e.ChannelInfo
	}
	return out, nil
}

// Members lists a channel's members, oldest first, for a user who is one.
func (s *Service) Members(ctx context.Context, user, ch string) ([]string, error) {
	if err := checkChannel(ch); err != nil {
		return nil, err
	}
	var ms []string
	err := s.read(ctx, s.shardOf(ch), readOp{Op: "members", User: user, Channel: ch}, &ms)
	return ms, err
}

// MembersForTyping is Members as the channel's shard leader has it now,
// without a linearized read: a typing indicator is shown or not, and a
// member added or removed a moment ago may be counted the old way.
func (s *Service) MembersForTyping(ctx context.Context, user, ch string) ([]string, error) {
	if err := checkChannel(ch); err != nil {
		return nil, err
	}
	var ms []string
	err := s.readWith(ctx, s.r.ReadLeaderState, s.shardOf(ch), readOp{Op: "members", User: user, Channel: ch}, &ms)
	return ms, err
}

// Cursors are a user's receipt positions in a channel.
type Cursors struct {
	Delivered uint64 `json:"delivered_seq"`
	Read      uint64 `json:"read_seq"`
}

// SetReceipt moves user's delivered or read cursor in ch up to seq.
func (s *Service) SetReceipt(ctx context.Context, user, ch string, seq uint64, status string) (Cursors, error) {
	if err := checkChannel(ch); err != nil {
		return Cursors{}, err
	}
	if status != "delivered" && status != "read" {
		return Cursors{}, errorf(ErrBadRequest, "status must be delivered or read, got %q", status)
	}
	res, err := s.propose(ctx, s.shardOf(ch), &Command{Op: opReceipt, User: user, Channel: ch,
		Seq: seq, Status: status, Ts: s.now().UnixMilli()})
	if err != nil {
		return Cursors{}, err
	}
	return Cursors{Delivered: res.Delivered, Read: res.Read}, nil
}

// ReceiptStatus says who has a message: counts over the members other than
// its sender, and the lists when the channel has at most 256 members.
type ReceiptStatus struct {
	Channel     string   `json:"channel"`
	Seq         uint64   `json:"seq"`
	Members     int      `json:"members"`
	Delivered   int      `json:"delivered"`
	Read        int      `json:"read"`
	DeliveredBy []string `json:"delivered_by,omitzero"` // nil above maxListed members
	ReadBy      []string `json:"read_by,omitzero"`
}

// maxListed is the largest channel whose receipt lists are returned.
const maxListed = 256

// Status reports the receipts of message seq in ch.
func (s *Service) Status(ctx context.Context, user, ch string, seq uint64) (ReceiptStatus, error) {
	if err := checkChannel(ch); err != nil {
		return ReceiptStatus{}, err
	}
	var st ReceiptStatus
	err := s.read(ctx, s.shardOf(ch), readOp{Op: "status", User: user, Channel: ch, Seq: seq}, &st)
	return st, err
}

// MembersOf lists a channel's members, oldest first, for delivery (no
// access check: the caller is the node itself).
func (s *Service) MembersOf(ctx context.Context, ch string) ([]string, error) {
	if err := checkChannel(ch); err != nil {
		return nil, err
	}
	var ms []string
	err := s.read(ctx, s.shardOf(ch), readOp{Op: "members", Channel: ch}, &ms)
	return ms, err
}
