package conn

import (
	"encoding/json"

	"github.com/parleychat/parley/channel"
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

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own frame types are encoded here; they always marshal.
		panic(err)
	}
	return b
}
