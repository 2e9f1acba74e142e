package client

import (
	"encoding/json"
	"fmt"
	"github.com/parleychat/parley/internal/flatjson"
	"reflect"
	"testing"
)

var flatSeeds = []string{
	// The server's frames, as it writes them.
	`{"type":"message","channel":"dm:alice:bob","seq":42,"from":"alice","body":"hi bob","ts":1795832745624,"key":"k-1"}`,
	`{"type":"sent","ref":"r7","channel":"dm:alice:bob","seq":42,"ts":1795832745624}`,
	`{"type":"sent","ref":"r8","channel":"g:team","seq":3,"ts":5,"duplicate":true}`,
	`{"type":"members","channel":"g:team","added":["carol","dave"],"removed":[]}`,
	`{"type":"presence","user":"bob","online":false,"last_seen":1795832745}`,
	`{"type":"receipt","channel":"dm:alice:bob","user":"bob","status":"read","seq":42}`,
	`{"type":"error","ref":"r9","code":"not_found","message":"no channel g:x"}`,
	`{"type":"welcome","user":"alice","session":"s1","node":"n1","ref":"r1"}`,
	// Plain, but not as the server writes them.
	" {\n\t\"type\" : \"message\" , \"seq\" : 0 ,\"ts\":-12 }\r\n",
	`{}`,
	`{"body":"héllo wörld ✓ 😀"}`,
	`{"type":"message","type":"sent"}`,
	`{"added":["a"],"added":null}`,
	`{"added":null,"seq":null,"body":null,"online":null}`,
	`{"unknown":"x","other":[1,2],"more":{"nested":true},"seq":1}`,
	`{"extra":[],"nothing":null,"flag":true,"n":-0}`,
	// What encoding/json decodes differently or refuses: left to it.
	`{"body":"line one\nline two \"quoted\" \u00e9 \ud83d\ude00"}`,
	`{"Type":"message","SEQ":4}`,
	`{"ſeq":4}`,
	`{"seq":1.5}`,
	`{"seq":1e3}`,
	`{"seq":-1}`,
	`{"seq":18446744073709551616}`,
	`{"ts":9223372036854775808}`,
	`{"seq":007}`,
	`{"seq":"4"}`,
	`{"body":4}`,
	`{"online":"yes"}`,
	`{"added":"carol"}`,
	`{"added":["carol",null]}`,
	`{"added":["carol",4]}`,
	"{\"body\":\"\xff\xfe\"}",
	"{\"body\":\"tab\there\"}",
	`{"type":"message"`,
	`{"type":"message"} trailing`,
	`{"type":"message",}`,
	`{"type" "message"}`,
	`["type","message"]`,
	`null`,
	``,
	`{"a":tru}`,
	`{"seq":-}`,
}

// decodeFrame gives what json.Unmarshal gives, fast path or not (a sent
// reply's fields included: Send takes them from it).
func FuzzFlatMatchesEncodingJSON(f *testing.F) {
	for _, s := range flatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got, want serverFrame
		gotErr, wantErr := decodeFrame(raw, &got), json.Unmarshal(raw, &want)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("%q: decodeFrame error %v, encoding/json error %v", raw, gotErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decodeFrame gives %+v, encoding/json %+v", raw, got, want)
		}
	})
}

// The server's own frames take the fast path (were it never taken, the
// fuzz test above would pass just the same).
func TestServerFramesTakeTheFastPath(t *testing.T) {
	for _, s := range flatSeeds[:8] {
		if !flatjson.Decode([]byte(s), func([]byte, *flatjson.Value) bool { return true }) {
			t.Errorf("%s: not decoded by the fast path", s)
		}
	}
	for _, s := range []string{`{"body":"a\nb"}`, `{"seq":1.5}`, `{"m":{"n":1}}`, `{"a":1} x`} {
		if flatjson.Decode([]byte(s), func([]byte, *flatjson.Value) bool { return true }) {
			t.Errorf("%s: taken by the fast path, which should leave it to encoding/json", s)
		}
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	raw := []byte(flatSeeds[0])
	b.Run("flat", func(b *testing.B) {
		for b.Loop() {
			var f serverFrame
			decodeFrame(raw, &f)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var f serverFrame
			json.Unmarshal(raw, &f)
		}
	})
}

// A 5,000-member group's creation pushes each member a members event
// naming all the others: 5,000 such frames at once to a load tool that
// holds every member.
func BenchmarkDecodeMembers(b *testing.B) {
	names := make([]string, 4999)
	for i := range names {
		names[i] = fmt.Sprintf("gm%d", i+1)
	}
	raw, _ := json.Marshal(map[string]any{"type": "members", "channel": "g:0123456789abcdef", "added": names})
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		var f serverFrame
		decodeFrame(raw, &f)
	}
}

// The send frame encodes itself exactly as encoding/json does.
func FuzzSendFrameMatchesEncodingJSON(f *testing.F) {
	f.Add("r1", "bob", "", "hello", "k1")
	f.Add("", "", "g:team", "<b>&\"q\"\\ é \u2028 \x01", "")
	f.Add("r", "u", "c", "bad \xff utf-8", "k")
	f.Fuzz(func(t *testing.T, ref, to, ch, body, key string) {
		frame := sendFrame{Type: "send", Ref: ref, To: to, Channel: ch, Body: body, Key: key}
		want, err := flatjson.Marshal(&frame) // encoding/json without HTML escapes
		if err != nil {
			t.Fatal(err)
		}
		if got := frame.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON gives %s, encoding/json %s", got, want)
		}
	})
}
