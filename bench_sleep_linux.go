package main

import (
	"time"

	"golang.org/x/sys/unix"
)

// sleepUntil returns at at, or at once if at has passed. The open-loop
// benchmarks measure latency from each send's scheduled time, so a send
// that goes out late counts its lateness as the server's. time.Sleep was
// up to a millisecond late: with nothing else to run, the runtime waits
// for its next timer in epoll_wait, whose timeout is whole milliseconds,
// so a send due in 0.5 ms went out after 1. At 500 DMs a second half the
// sends were 0.45 ms or more late (p90 0.97 ms), a quarter of the
// delivery p50 measured then; at 2,000 a second, p50 0.13 and p90 0.56 ms.
// nanosleep wakes the thread within the kernel's timer slack (50 µs by
// default) while the runtime runs the rest on its other threads.
func sleepUntil(at time.Time) {
	for d := time.Until(at); d > 0; d = time.Until(at) {
		ts := unix.NsecToTimespec(d.Nanoseconds())
		unix.Nanosleep(&ts, nil) // EINTR (the runtime's preemption signal): the loop sleeps the rest
	}
}
