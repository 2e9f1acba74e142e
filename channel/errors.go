package channel

import (
	"errors"
	"fmt"
)

// Error is an error with one of the protocol's error codes (PROTOCOL.md).
// Errors compare equal under errors.Is when their codes match, so callers
// test with errors.Is(err, channel.ErrForbidden).
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Is matches any *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The protocol's error codes, as sentinels for errors.Is.
var (
	ErrBadRequest   = &Error{Code: "bad_request"}
	ErrUnauthorized = &Error{Code: "unauthorized"}
	ErrForbidden    = &Error{Code: "forbidden"}
	ErrNotFound     = &Error{Code: "not_found"}
	ErrConflict     = &Error{Code: "conflict"}
	ErrTooLarge     = &Error{Code: "too_large"}
	ErrRateLimited  = &Error{Code: "rate_limited"}
	ErrUnavailable  = &Error{Code: "unavailable"}
	ErrInternal     = &Error{Code: "internal"}
)

func errorf(code *Error, format string, args ...any) *Error {
	return &Error{Code: code.Code, Message: fmt.Sprintf(format, args...)}
}

// Code returns the protocol error code for any error: the code of an *Error
// in its chain, or "internal".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ErrInternal.Code
}
