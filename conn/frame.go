package conn

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/internal/flatjson"
)

// Frame is a client frame of PROTOCOL.md. Pointer fields tell "missing"
// from "zero" where the protocol needs to.
type Frame struct {
	Type    string   `json:"type"`
	Ref     string   `json:"ref"`
	Token   string   `json:"token"`
	To      string   `json:"to"`
	Channel string   `json:"channel"`
	Body    string   `json:"body"`
	Key     string   `json:"key"`
	Name    string   `json:"name"`
	Members []string `json:"members"`
	Users   []string `json:"users"`
	After   *uint64  `json:"after"`
	Before  *uint64  `json:"before"`
	Limit   *int     `json:"limit"`
	Seq     *uint64  `json:"seq"`
	Status  string   `json:"status"`
}

// maxRef is the longest ref a client may choose.
const maxRef = 64

// maxPresenceUsers bounds one presence request.
const maxPresenceUsers = 1000

// DecodeFrame parses and validates one client frame. On error the frame
// is still returned when its ref could be read, so the reply can carry it.
func DecodeFrame(raw []byte) (*Frame, *channel.Error) {
	var f Frame
	var err error
	if !utf8.Valid(raw) {
		// Decoding would quietly turn the bad bytes into U+FFFD; refuse,
		// but read the ref for the reply.
		json.Unmarshal(raw, &f)
		if !utf8.ValidString(f.Ref) || len(f.Ref) > maxRef {
			f.Ref = ""
		}
		return &f, badRequest("frame is not valid UTF-8")
	}
	if !decodeFast(raw, &f) {
		f = Frame{}
		err = json.Unmarshal(raw, &f)
	}
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &f, badRequest("field %s: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return nil, badRequest("invalid JSON: %v", err)
	}
	if len(f.Ref) > maxRef {
		return &f, badRequest("ref is %d chars, at most %d", len(f.Ref), maxRef)
	}
	return &f, f.validate()
}

var frameNames = []string{"type", "ref", "token", "to", "channel", "body", "key", "name",
	"members", "users", "after", "before", "limit", "seq", "status"}

// decodeFast decodes raw into f as json.Unmarshal would, for the plain
// frames nearly every client sends; false leaves it to encoding/json
// (FuzzDecodeFastMatchesEncodingJSON).
func decodeFast(raw []byte, f *Frame) bool {
	return flatjson.Decode(raw, func(key []byte, v *flatjson.Value) bool {
		switch string(key) {
		case "type":
			return v.SetString(&f.Type)
		case "ref":
			return v.SetString(&f.Ref)
		case "token":
			return v.SetString(&f.Token)
		case "to":
			return v.SetString(&f.To)
		case "channel":
			return v.SetString(&f.Channel)
		case "body":
			return v.SetString(&f.Body)
		case "key":
			return v.SetString(&f.Key)
		case "name":
			return v.SetString(&f.Name)
		case "members":
			return v.SetStrings(&f.Members)
		case "users":
			return v.SetStrings(&f.Users)
		case "after":
			return flatjson.SetNumberPtr(v, &f.After, flatjson.ParseUint)
		case "before":
			return flatjson.SetNumberPtr(v, &f.Before, flatjson.ParseUint)
		case "limit":
			return flatjson.SetNumberPtr(v, &f.Limit, flatjson.ParseIntInt)
		case "seq":
			return flatjson.SetNumberPtr(v, &f.Seq, flatjson.ParseUint)
		case "status":
			return v.SetString(&f.Status)
		}
		return flatjson.OtherKey(key, frameNames)
	})
}

// validate checks that the fields a frame type needs are there. Values are
// checked by the channel service, which knows the limits.
func (f *Frame) validate() *channel.Error {
	need := func(ok bool, field string) *channel.Error {
		if !ok {
			return badRequest("%s: missing %s", f.Type, field)
		}
		return nil
	}
	switch f.Type {
	case "":
		return badRequest("missing type")
	case "hello":
		return need(f.Token != "", "token")
	case "send":
		if f.To == "" && f.Channel == "" {
			return badRequest("send: missing to or channel")
		}
		if err := need(f.Body != "", "body"); err != nil {
			return err
		}
		return need(f.Key != "", "key")
	case "create_group":
		return need(f.Name != "", "name")
	case "add_members", "remove_members":
		if err := need(f.Channel != "", "channel"); err != nil {
			return err
		}
		return need(len(f.Members) > 0, "members")
	case "leave", "typing":
		return need(f.Channel != "", "channel")
	case "history":
		if err := need(f.Channel != "", "channel"); err != nil {
			return err
		}
		if f.After != nil && f.Before != nil {
			return badRequest("history: give after or before, not both")
		}
		if f.Limit != nil && (*f.Limit < 1 || *f.Limit > 1000) {
			return badRequest("history: limit must be 1-1000, got %d", *f.Limit)
		}
	case "receipt":
		if err := need(f.Channel != "", "channel"); err != nil {
			return err
		}
		if err := need(f.Seq != nil, "seq"); err != nil {
			return err
		}
		if f.Status != "delivered" && f.Status != "read" {
			return badRequest("receipt: status must be delivered or read, got %q", f.Status)
		}
	case "status":
		if err := need(f.Channel != "", "channel"); err != nil {
			return err
		}
		return need(f.Seq != nil, "seq")
	case "presence":
		if err := need(len(f.Users) > 0, "users"); err != nil {
			return err
		}
		if len(f.Users) > maxPresenceUsers {
			return badRequest("presence: at most %d users", maxPresenceUsers)
		}
	case "channels", "ping":
	default:
		return badRequest("unknown type %q", f.Type)
	}
	return nil
}

func badRequest(format string, args ...any) *channel.Error {
	return &channel.Error{Code: channel.ErrBadRequest.Code, Message: fmt.Sprintf(format, args...)}
}
