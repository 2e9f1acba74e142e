package conn

import (
	"strconv"

	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/internal/flatjson"
)

// Server frames. Each marshals with "type" first, as PROTOCOL.md shows them.

type messageFrame struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	From    string `json:"from"`
	Body    string `json:"body"`
	Ts      int64  `json:"ts"`
	Key     string `json:"key"`
}

func (f messageFrame) appendJSON(b []byte) []byte {
	b = flatjson.AppendString(append(b, `{"type":`...), f.Type)
	b = flatjson.AppendString(append(b, `,"channel":`...), f.Channel)
	b = strconv.AppendUint(append(b, `,"seq":`...), f.Seq, 10)
	b = flatjson.AppendString(append(b, `,"from":`...), f.From)
	b = flatjson.AppendString(append(b, `,"body":`...), f.Body)
	b = strconv.AppendInt(append(b, `,"ts":`...), f.Ts, 10)
	b = flatjson.AppendString(append(b, `,"key":`...), f.Key)
	return append(b, '}')
}

func (f sentFrame) appendJSON(b []byte) []byte {
	b = flatjson.AppendString(append(b, `{"type":`...), f.Type)
	if f.Ref != "" {
		b = flatjson.AppendString(append(b, `,"ref":`...), f.Ref)
	}
	b = flatjson.AppendString(append(b, `,"channel":`...), f.Channel)
	b = strconv.AppendUint(append(b, `,"seq":`...), f.Seq, 10)
	b = strconv.AppendInt(append(b, `,"ts":`...), f.Ts, 10)
	b = strconv.AppendBool(append(b, `,"duplicate":`...), f.Duplicate)
	return append(b, '}')
}

func newMessageFrame(m *channel.Message) messageFrame {
	return messageFrame{Type: "message", Channel: m.Channel, Seq: m.Seq, From: m.From, Body: m.Body, Ts: m.Ts, Key: m.Key}
}

type receiptFrame struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	User    string `json:"user"`
	Status  string `json:"status"`
	Seq     uint64 `json:"seq"`
}

type membersFrame struct {
	Type    string   `json:"type"`
	Channel string   `json:"channel"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
}

type typingFrame struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	User    string `json:"user"`
}

type presenceFrame struct {
	Type     string `json:"type"`
	User     string `json:"user"`
	Online   bool   `json:"online"`
	LastSeen int64  `json:"last_seen"`
}

type welcomeFrame struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Session string `json:"session"`
	Node    string `json:"node"`
}

type errorFrame struct {
	Type    string `json:"type"`
	Ref     string `json:"ref,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type okFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
}

type sentFrame struct {
	Type      string `json:"type"`
	Ref       string `json:"ref,omitempty"`
	Channel   string `json:"channel"`
	Seq       uint64 `json:"seq"`
	Ts        int64  `json:"ts"`
	Duplicate bool   `json:"duplicate"`
}

type groupFrame struct {
	Type    string   `json:"type"`
	Ref     string   `json:"ref,omitempty"`
	Channel string   `json:"channel"`
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
}

type channelsFrame struct {
	Type     string                `json:"type"`
	Ref      string                `json:"ref,omitempty"`
	Channels []channel.ChannelInfo `json:"channels"`
}

type messagesFrame struct {
	Type     string         `json:"type"`
	Ref      string         `json:"ref,omitempty"`
	Channel  string         `json:"channel"`
	Messages []messageFrame `json:"messages"`
	LastSeq  uint64         `json:"last_seq"`
}

type statusFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
	channel.ReceiptStatus
}

type presenceState struct {
	Online   bool  `json:"online"`
	LastSeen int64 `json:"last_seen"`
}

type presenceReply struct {
	Type  string                   `json:"type"`
	Ref   string                   `json:"ref,omitempty"`
	Users map[string]presenceState `json:"users"`
}

// jsonAppender is a frame that encodes itself, byte for byte as
// flatjson.Marshal would (FuzzAppendJSONMatchesEncodingJSON): the frames of
// every send (the ack) and every delivery (the message), whose reflective
// encoding was 2% of a loaded node's CPU.
type jsonAppender interface{ appendJSON(b []byte) []byte }

func encode(v any) []byte {
	if a, ok := v.(jsonAppender); ok {
		return a.appendJSON(make([]byte, 0, 128))
	}
	b, err := flatjson.Marshal(v)
	if err != nil {
		// Only our own frame types are encoded here; they always marshal.
		panic(err)
	}
	return b
}
