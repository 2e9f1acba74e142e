package channel

import (
	"strings"
	"unicode/utf8"
)

// ValidUser reports whether id is a user id: 1-32 chars of [a-z0-9_.-],
// starting with a letter or digit.
func ValidUser(id string) bool {
	if len(id) < 1 || len(id) > 32 || !isAlnumLower(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlnumLower(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnumLower(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// DM returns the direct channel id of two users: dm:<a>:<b>, sorted.
func DM(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

// ParseDM returns the two users of a direct channel id, and false if id is
// not a well-formed one (users valid, distinct and sorted).
func ParseDM(id string) (a, b string, ok bool) {
	rest, found := strings.CutPrefix(id, "dm:")
	if !found {
		return "", "", false
	}
	a, b, found = strings.Cut(rest, ":")
	if !found || !ValidUser(a) || !ValidUser(b) || a >= b {
		return "", "", false
	}
	return a, b, true
}

// ValidGroupID reports whether id is a group channel id: g: then 1-64 chars
// of [A-Za-z0-9_-].
func ValidGroupID(id string) bool {
	rest, ok := strings.CutPrefix(id, "g:")
	if !ok || len(rest) < 1 || len(rest) > 64 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkChannel validates a channel id of either kind.
func checkChannel(id string) error {
	if _, _, ok := ParseDM(id); ok || ValidGroupID(id) {
		return nil
	}
	if strings.HasPrefix(id, "dm:") {
		return errorf(ErrBadRequest, "invalid direct channel %q: want dm:<a>:<b> with two different user ids, sorted", id)
	}
	return errorf(ErrBadRequest, "invalid channel id %q", id)
}

func checkUser(field, id string) error {
	if !ValidUser(id) {
		return errorf(ErrBadRequest, "invalid user id %q in %s: 1-32 chars of a-z 0-9 _ . - starting with a letter or digit", id, field)
	}
	return nil
}

// checkText validates a body or name: valid UTF-8, 1..max bytes.
func checkText(field, s string, max int) error {
	if s == "" {
		return errorf(ErrBadRequest, "%s is empty", field)
	}
	if !utf8.ValidString(s) {
		return errorf(ErrBadRequest, "%s is not valid UTF-8", field)
	}
	if len(s) > max {
		return errorf(ErrTooLarge, "%s is %d bytes, the limit is %d", field, len(s), max)
	}
	return nil
}

func checkKey(key string) error {
	if len(key) < 1 || len(key) > 128 {
		return errorf(ErrBadRequest, "key must be 1-128 chars, got %d", len(key))
	}
	if !utf8.ValidString(key) {
		return errorf(ErrBadRequest, "key is not valid UTF-8")
	}
	return nil
}
