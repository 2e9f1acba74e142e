//go:build !linux

package timerslack

import "time"

// Ensure does nothing where there is no per-thread timer slack to set.
func Ensure(d time.Duration) error { return nil }
