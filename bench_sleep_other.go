//go:build !linux

package main

import "time"

// sleepUntil returns at at, or at once if at has passed (see the Linux
// version for why it is not time.Sleep there).
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }
