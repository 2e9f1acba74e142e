// Package flatjson is a fast path for decoding flat JSON objects (strings,
// integers, booleans, arrays of strings), exactly as encoding/json would
// into a struct of those types, for the frames parley's client and server
// exchange on every message.
package flatjson

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Every protocol frame is a flat JSON object of strings, integers, booleans
// and arrays of strings, and encoding/json's reflection cost a load test's
// client ~15 µs a frame, more than a fifth of its CPU; on the server it was
// 3% of a loaded node's. Decode handles exactly that shape, and only the
// plain cases of it; anything else (an escape in a string, a fraction, a
// nested object, a key that differs from a field's name only in case,
// invalid JSON) makes it give up, and the caller decodes with
// encoding/json, so the result is always what encoding/json gives (the
// fuzz tests of client and conn check it).

// Value is one member's value: a string's bytes (no escapes, valid
// UTF-8), a number's or a boolean's text, an array of strings, or null.
type Value struct {
	kind byte   // '"' string, '0' number, 't' or 'f' boolean, '[' array of strings, 'n' null
	raw  []byte // a string's contents; a number's, boolean's or array's whole text
	n    int    // an array's length
}

// Field is what a decoder does with one member: false gives up.
type Field func(key []byte, v *Value) bool

// Decode walks the object in raw, calling set for each member. It reports false (the caller must decode another way)
// when the input is not a flat object of plain values, or set gave up.
func Decode(raw []byte, set Field) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	var v Value
	for {
		var key []byte
		var ok bool
		if key, i, ok = plainString(raw, i); !ok {
			return false
		}
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		i = skipSpace(raw, i+1)
		if i >= len(raw) {
			return false
		}
		v = Value{}
		switch c := raw[i]; {
		case c == '"':
			v.kind = '"'
			if v.raw, i, ok = plainString(raw, i); !ok {
				return false
			}
		case c == '-' || c >= '0' && c <= '9':
			v.kind = '0'
			if v.raw, i, ok = integer(raw, i); !ok {
				return false
			}
		case hasWord(raw, i, "true"):
			v.kind, v.raw, i = 't', raw[i:i+4], i+4
		case hasWord(raw, i, "false"):
			v.kind, v.raw, i = 'f', raw[i:i+5], i+5
		case hasWord(raw, i, "null"):
			v.kind, i = 'n', i+4
		case c == '[':
			v.kind = '['
			if i, ok = stringArray(raw, i, &v); !ok {
				return false
			}
		default:
			return false // a nested object, or not JSON
		}
		if !set(key, &v) {
			return false
		}
		i = skipSpace(raw, i)
		if i >= len(raw) {
			return false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return skipSpace(raw, i+1) == len(raw)
		default:
			return false
		}
	}
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}

func hasWord(raw []byte, i int, w string) bool {
	return len(raw)-i >= len(w) && string(raw[i:i+len(w)]) == w
}

// plainString reads the string starting at raw[i] (a quote), returning its
// contents and the index after it; false for an escape, a control
// character or invalid UTF-8, which encoding/json decodes or replaces.
func plainString(raw []byte, i int) ([]byte, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return nil, i, false
	}
	start := i + 1
	ascii := true
	for j := start; j < len(raw); j++ {
		switch c := raw[j]; {
		case c == '"':
			s := raw[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, i, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, i, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, i, false
}

// integer reads an integer in JSON's grammar (no leading zeros); false for
// a fraction or an exponent, left to encoding/json.
func integer(raw []byte, i int) ([]byte, int, bool) {
	start := i
	if raw[i] == '-' {
		i++
	}
	digits := i
	for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
		i++
	}
	if i == digits || raw[digits] == '0' && i-digits > 1 {
		return nil, i, false
	}
	if i < len(raw) && (raw[i] == '.' || raw[i] == 'e' || raw[i] == 'E') {
		return nil, i, false
	}
	return raw[start:i], i, true
}

func stringArray(raw []byte, i int, v *Value) (int, bool) {
	start := i
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == ']' {
		v.raw = raw[start : i+1]
		return i + 1, true
	}
	for {
		_, j, ok := plainString(raw, i)
		if !ok {
			return i, false
		}
		v.n++
		i = skipSpace(raw, j)
		if i >= len(raw) {
			return i, false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case ']':
			v.raw = raw[start : i+1]
			return i + 1, true
		default:
			return i, false
		}
	}
}

// The setters below store a value into a field of the matching Go type, or
// give up where encoding/json would fail or do something else. Like
// encoding/json, null leaves a field as it was, but a slice nil.

// takes reports whether a field that holds values of the given kinds
// takes v (take), and whether encoding/json would accept it (ok): null is
// accepted and taken by none.
func (v *Value) takes(kinds string) (take, ok bool) {
	if v.kind == 'n' {
		return false, true
	}
	take = strings.IndexByte(kinds, v.kind) >= 0
	return take, take
}

func (v *Value) SetString(p *string) bool {
	take, ok := v.takes(`"`)
	if take {
		*p = string(v.raw)
	}
	return ok
}

func (v *Value) SetBool(p *bool) bool {
	take, ok := v.takes("tf")
	if take {
		*p = v.kind == 't'
	}
	return ok
}

func SetNumber[T int64 | uint64](v *Value, p *T, parse func(string) (T, error)) bool {
	take, ok := v.takes("0")
	if !take {
		return ok
	}
	n, err := parse(string(v.raw))
	*p = n
	return err == nil
}

// SetNumberPtr is SetNumber for a pointer field: null sets it nil, as
// encoding/json does, and a number gives it a new value.
func SetNumberPtr[T int | int64 | uint64](v *Value, p **T, parse func(string) (T, error)) bool {
	if v.kind == 'n' {
		*p = nil
		return true
	}
	if v.kind != '0' {
		return false
	}
	n, err := parse(string(v.raw))
	if err != nil {
		return false
	}
	*p = &n
	return true
}

func ParseUint(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }
func ParseIntInt(s string) (int, error)  { return strconv.Atoi(s) }
func ParseInt(s string) (int64, error)   { return strconv.ParseInt(s, 10, 64) }

func (v *Value) SetStrings(p *[]string) bool {
	if v.kind == 'n' {
		*p = nil
		return true
	}
	if v.kind != '[' {
		return false
	}
	// The array was checked to be plain strings, so its elements are what
	// lies between its quotes, taken in pairs. They are cut from one copy
	// of the array's text: two allocations, not one per element (a
	// 5,000-member group's members event has 4,999).
	out := make([]string, v.n)
	text := string(v.raw)
	k, open := 0, -1
	for i := 0; i < len(text); i++ {
		if text[i] != '"' {
			continue
		}
		if open < 0 {
			open = i
			continue
		}
		out[k] = text[open+1 : i]
		k, open = k+1, -1
	}
	*p = out
	return true
}

// OtherKey decides about a member that matches no field: encoding/json
// ignores it, unless it matches a field's name but for case (it matches
// names case-insensitively), which is left to encoding/json.
func OtherKey(key []byte, names []string) bool {
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return false
		}
	}
	return true
}

// Marshal is encoding/json's Marshal without its escaping for HTML: a
// `<`, `>` or `&` goes as it is rather than as six bytes (`\u003c`). The
// frames are JSON for programs, never pasted into a page, and code in a
// message is full of them. (encoding/json still escapes control
// characters, U+2028 and U+2029.)
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// AppendString appends s quoted as Marshal quotes it: as it is when it
// needs no escape (writesAsIs), through Marshal otherwise. The frames that
// encode themselves with it (the server's sent and message frames, the
// client's send) are checked byte for byte against Marshal by fuzz tests.
func AppendString(b []byte, s string) []byte {
	if !writesAsIs(s) {
		q, _ := Marshal(s) // a string always marshals
		return append(b, q...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// writesAsIs reports whether Marshal would write s as it is: valid UTF-8
// without the quote, the backslash, control characters, U+2028 or U+2029.
func writesAsIs(s string) bool {
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' ||
			c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9) {
			return false
		}
		ascii = ascii && c < utf8.RuneSelf
	}
	return ascii || utf8.ValidString(s)
}
