package channel

import (
	"context"
	"encoding/json"
	"errors"
)

// A read is a small operation on one shard's state, encoded as JSON, so the
// Router may run it on whichever node can serve the shard (its leader, after
// confirming leadership) and ship the answer back.
type readOp struct {
	Op        string   `json:"op"`
	User      string   `json:"user,omitempty"`
	Channel   string   `json:"ch,omitempty"`
	Channels  []string `json:"chs,omitempty"`
	After     uint64   `json:"after,omitempty"`
	Before    uint64   `json:"before,omitempty"`
	UseBefore bool     `json:"use_before,omitempty"`
	Limit     int      `json:"limit,omitempty"`
	Seq       uint64   `json:"seq,omitempty"`
}

// readReply is a read's answer: an error or a value.
type readReply struct {
	Err *Error          `json:"err,omitempty"`
	V   json.RawMessage `json:"v,omitempty"`
}

// historyPage is the value of a history read.
type historyPage struct {
	Messages []Message `json:"messages"`
	LastSeq  uint64    `json:"last_seq"`
	Exists   bool      `json:"exists"`
}

// channelEntry is one channel of a channel_infos read.
type channelEntry struct {
	ChannelInfo
	LastTs int64 `json:"last_ts"`
}

// ExecRead runs an encoded read on shard against this node's state; the
// Router calls it once the state is current. Refusals are in the reply.
func (s *Service) ExecRead(shard int, raw []byte) ([]byte, error) {
	var op readOp
	if err := json.Unmarshal(raw, &op); err != nil {
		return nil, err
	}
	rd := reader{k: s.keys[shard], r: s.db}
	v, err := rd.exec(&op)
	var refusal *Error
	if errors.As(err, &refusal) {
		return json.Marshal(readReply{Err: refusal})
	}
	if err != nil {
		return nil, err
	}
	if a, ok := v.(binaryAppender); ok {
		// A binary value is the whole reply: it starts with binV1, not
		// the JSON envelope's '{'.
		return a.appendFields([]byte{binV1}), nil
	}
	val, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(readReply{V: val})
}

func (rd reader) exec(op *readOp) (any, error) {
	switch op.Op {
	case "account":
		var acc account
		found, err := getRecord(rd.r, rd.k.account(op.User), &acc)
		if err != nil || !found {
			return nil, err
		}
		return acc, nil
	case "history":
		m, err := rd.access(op.Channel, op.User)
		if err != nil || m == nil {
			return historyPage{Messages: []Message{}}, err
		}
		page := historyPage{LastSeq: m.LastSeq, Exists: true, Messages: []Message{}}
		if op.UseBefore && op.Before <= 1 {
			return page, nil
		}
		before := uint64(0)
		if op.UseBefore {
			before = op.Before
		}
		page.Messages, err = rd.history(op.Channel, op.After, before, op.Limit)
		return page, err
	case "user_channels":
		return rd.userChannels(op.User)
	case "channel_infos":
		return rd.channelInfos(op.User, op.Channels)
	case "members":
		if op.User != "" {
			if _, err := rd.access(op.Channel, op.User); err != nil {
				return nil, err
			}
		}
		return rd.members(op.Channel)
	case "status":
		return rd.status(op.Channel, op.User, op.Seq)
	case "outbox":
		return rd.outbox(op.Limit)
	}
	return nil, errorf(ErrBadRequest, "unknown read %q", op.Op)
}

// read runs op on shard through the Router and decodes its value into out.
func (s *Service) read(ctx context.Context, shard int, op readOp, out any) error {
	return s.readWith(ctx, s.r.Read, shard, op, out)
}

// readWith is read through one of the Router's read paths.
func (s *Service) readWith(ctx context.Context, via func(context.Context, int, []byte) ([]byte, error), shard int, op readOp, out any) error {
	raw, _ := json.Marshal(op)
	resp, err := via(ctx, shard, raw)
	if err != nil {
		return wrapRouterErr(err)
	}
	if len(resp) > 0 && resp[0] == binV1 {
		if out == nil {
			return nil
		}
		if err := decodeValue(resp, out); err != nil {
			return errorf(ErrInternal, "shard %d read reply: %v", shard, err)
		}
		return nil
	}
	var rep readReply
	if err := json.Unmarshal(resp, &rep); err != nil {
		return errorf(ErrInternal, "shard %d read reply: %v", shard, err)
	}
	if rep.Err != nil {
		return rep.Err
	}
	if out == nil || len(rep.V) == 0 || string(rep.V) == "null" {
		return nil
	}
	return json.Unmarshal(rep.V, out)
}

// channelInfos describes the channels of chs that user may still see.
func (rd reader) channelInfos(user string, chs []string) ([]channelEntry, error) {
	out := make([]channelEntry, 0, len(chs))
	for _, ch := range chs {
		m, err := rd.access(ch, user)
		if errors.Is(err, ErrForbidden) || errors.Is(err, ErrNotFound) || (err == nil && m == nil) {
			continue // the index is being updated; the channel's shard is the truth
		}
		if err != nil {
			return nil, err
		}
		cur, err := rd.cursor(ch, user)
		if err != nil {
			return nil, err
		}
		name := m.Name
		if a, b, ok := ParseDM(ch); ok { // a DM is named for the other party
			name = a
			if a == user {
				name = b
			}
		}
		out = append(out, channelEntry{ChannelInfo: ChannelInfo{Channel: ch, Kind: m.Kind, Name: name,
			LastSeq: m.LastSeq, DeliveredSeq: cur.Delivered, ReadSeq: cur.Read}, LastTs: m.LastTs})
	}
	return out, nil
}

// status counts who has message seq of ch, over the members other than its sender.
func (rd reader) status(ch, user string, seq uint64) (ReceiptStatus, error) {
	m, err := rd.access(ch, user)
	if err != nil {
		return ReceiptStatus{}, err
	}
	if m == nil || seq < 1 || seq > m.LastSeq {
		return ReceiptStatus{}, errorf(ErrNotFound, "no message %d in %s", seq, ch)
	}
	msgs, err := rd.history(ch, seq-1, 0, 1)
	if err != nil || len(msgs) != 1 {
		return ReceiptStatus{}, errorf(ErrInternal, "message %d of %s unreadable: %v", seq, ch, err)
	}
	members, err := rd.members(ch)
	if err != nil {
		return ReceiptStatus{}, err
	}
	st := ReceiptStatus{Channel: ch, Seq: seq, Members: len(members)}
	list := len(members) <= maxListed
	if list {
		st.DeliveredBy, st.ReadBy = []string{}, []string{}
	}
	for _, u := range members {
		if u == msgs[0].From {
			continue
		}
		cur, err := rd.cursor(ch, u)
		if err != nil {
			return ReceiptStatus{}, err
		}
		if cur.Delivered >= seq {
			st.Delivered++
			if list {
				st.DeliveredBy = append(st.DeliveredBy, u)
			}
		}
		if cur.Read >= seq {
			st.Read++
			if list {
				st.ReadBy = append(st.ReadBy, u)
			}
		}
	}
	return st, nil
}
