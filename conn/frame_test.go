package conn

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/internal/flatjson"
)

var frameSeeds = []string{
	`{"type":"send","ref":"r1","to":"bob","body":"hello","key":"k1"}`,
	`{"type":"send","ref":"r2","channel":"g:team","body":"hé","key":"k2"}`,
	`{"type":"history","ref":"r3","channel":"dm:alice:bob","before":10,"limit":50}`,
	`{"type":"history","ref":"r4","channel":"dm:alice:bob","after":0}`,
	`{"type":"receipt","channel":"dm:alice:bob","seq":7,"status":"read"}`,
	`{"type":"create_group","ref":"r5","name":"team","members":["bob","carol"]}`,
	`{"type":"presence","ref":"r6","users":[]}`,
	`{"type":"hello","token":"abc.def"}`,
	`{"type":"send","body":"a\nb"}`,
	`{"type":"send","Body":"case"}`,
	`{"type":"send","extra":{"x":1}}`,
	`{"seq":-1}`, `{"limit":1.5}`, `{"seq":null,"seq":3}`, `{"members":null}`, `{"members":[1]}`,
	`{"limit":99999999999999999999}`, `{"type":1}`, `{"type":"a"} x`, `[]`, ``, `{"ref":"r","ref":"s"}`,
}

// decodeFast gives what json.Unmarshal gives whenever it takes a frame.
func FuzzDecodeFastMatchesEncodingJSON(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got Frame
		if !decodeFast(raw, &got) {
			return
		}
		var want Frame
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("%q: decodeFast took it, encoding/json says %v", raw, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decodeFast gives %+v, encoding/json %+v", raw, got, want)
		}
	})
}

// The frames clients send take the fast path; the rest is left to
// encoding/json, and DecodeFrame's answer is the same either way.
func TestDecodeFrameFastPath(t *testing.T) {
	for _, s := range frameSeeds[:8] {
		var f Frame
		if !decodeFast([]byte(s), &f) {
			t.Errorf("%s: not decoded by the fast path", s)
		}
	}
	for _, s := range frameSeeds[8:] {
		var f Frame
		if decodeFast([]byte(s), &f) && s != `{"seq":null,"seq":3}` && s != `{"members":null}` && s != `{"ref":"r","ref":"s"}` {
			t.Errorf("%s: taken by the fast path, which should leave it to encoding/json", s)
		}
	}
	f, e := DecodeFrame([]byte(`{"type":"send","ref":"r1","to":"bob","body":"hi","key":"k"}`))
	if e != nil || f.Type != "send" || f.Ref != "r1" || f.To != "bob" || f.Body != "hi" || f.Key != "k" {
		t.Fatalf("DecodeFrame: %+v, %v", f, e)
	}
	if _, e := DecodeFrame([]byte(`{"type":"history","ref":"r","channel":"c","limit":"x"}`)); e == nil || e.Message != "field limit: want int, got string" {
		t.Fatalf("a string limit: %v", e)
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	raw := []byte(frameSeeds[0])
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			DecodeFrame(raw)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var f Frame
			json.Unmarshal(raw, &f)
		}
	})
}

// Frames leave <, > and & as they are: six bytes each for code in a
// message was six times the frame.
func TestFramesDoNotEscapeHTML(t *testing.T) {
	got := string(encode(newMessageFrame(&channel.Message{Channel: "dm:a:b", Seq: 1, From: "a", Body: "if a<b && c>d {}", Key: "k"})))
	if want := `"body":"if a<b && c>d {}"`; !strings.Contains(got, want) {
		t.Fatalf("message frame %s, want %s in it", got, want)
	}
	got = string(encode(okFrame{Type: "ok", Ref: "<&>"}))
	if want := `"ref":"<&>"`; !strings.Contains(got, want) {
		t.Fatalf("ok frame %s, want %s in it", got, want)
	}
}

// The frames that encode themselves do it exactly as encoding/json does
// (without the escapes for HTML).
func FuzzAppendJSONMatchesEncodingJSON(f *testing.F) {
	f.Add("r1", "dm:alice:bob", "alice", "hello", "k1", uint64(7), int64(1_700_000_000_000), true)
	f.Add("", "g:team", "bob", "<b>&\"q\"\\ é \u2028 \x01", "", uint64(0), int64(-1), false)
	f.Add("r", "c", "u", "bad \xff utf-8", "k", uint64(1<<63), int64(1<<62), false)
	f.Add("r", "c", "u", "héllo wörld 😀 “quoted” \u2029", "k", uint64(2), int64(3), false)
	f.Fuzz(func(t *testing.T, ref, ch, from, body, key string, seq uint64, ts int64, dup bool) {
		for _, v := range []any{
			sentFrame{Type: "sent", Ref: ref, Channel: ch, Seq: seq, Ts: ts, Duplicate: dup},
			messageFrame{Type: "message", Channel: ch, Seq: seq, From: from, Body: body, Ts: ts, Key: key},
		} {
			want, err := flatjson.Marshal(v) // encoding/json without HTML escapes
			if err != nil {
				t.Fatal(err)
			}
			if got := encode(v); string(got) != string(want) {
				t.Fatalf("encode gives %s, encoding/json %s", got, want)
			}
		}
	})
}
