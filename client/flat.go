package client

import "github.com/parleychat/parley/internal/flatjson"

// The server's frames are decoded by flatjson's fast path, with
// encoding/json as the fallback (FuzzFlatMatchesEncodingJSON).

var frameNames = []string{"type", "channel", "seq", "from", "body", "ts", "key", "user", "status",
	"added", "removed", "online", "last_seen", "ref", "duplicate"}

// decodeFrame decodes a server frame into f, as json.Unmarshal would.
func decodeFrame(raw []byte, f *serverFrame) error {
	ok := flatjson.Decode(raw, func(key []byte, v *flatjson.Value) bool {
		switch string(key) {
		case "type":
			return v.SetString(&f.Type)
		case "channel":
			return v.SetString(&f.Channel)
		case "seq":
			return flatjson.SetNumber(v, &f.Seq, flatjson.ParseUint)
		case "from":
			return v.SetString(&f.From)
		case "body":
			return v.SetString(&f.Body)
		case "ts":
			return flatjson.SetNumber(v, &f.Ts, flatjson.ParseInt)
		case "key":
			return v.SetString(&f.Key)
		case "user":
			return v.SetString(&f.User)
		case "status":
			return v.SetString(&f.Status)
		case "added":
			return v.SetStrings(&f.Added)
		case "removed":
			return v.SetStrings(&f.Removed)
		case "online":
			return v.SetBool(&f.Online)
		case "last_seen":
			return flatjson.SetNumber(v, &f.LastSeen, flatjson.ParseInt)
		case "ref":
			return v.SetString(&f.Ref)
		case "duplicate":
			return v.SetBool(&f.Duplicate)
		}
		return flatjson.OtherKey(key, frameNames)
	})
	if ok {
		return nil
	}
	*f = serverFrame{}
	return jsonUnmarshal(raw, f)
}
