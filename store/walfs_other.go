//go:build !linux

package store

import "errors"

// preallocate is Linux's fallocate only; elsewhere Pebble's own
// preallocation is used.
func preallocate(fd uintptr, offset, length int64) error {
	return errors.ErrUnsupported
}
