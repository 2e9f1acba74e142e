// Package timerslack gives every thread of the process one timer slack.
//
// The timer slack is how late the kernel may wake a thread whose timer
// expired, so that wake-ups close together become one. Linux gives each
// thread 50 µs. An idle node is all timers (64 Raft groups' heartbeats,
// elections and leases, gossip, the database's housekeeping), and on a VM
// each wake-up of an idle process costs tens of µs; with a slack of a few ms
// the runtime's timer thread wakes once for timers that expire within that
// much of each other.
//
// Measured on the bench cluster (3 nodes, 64 shards, fresh clusters, the
// nodes' CPU from /proc, interleaved runs; see cluster/DESIGN.md):
//   - idle: 6.4-7.4% of a core with the kernel's 50 µs, 4.1-5.2% with 2 ms,
//     3.5-4.0% with 5 ms (the default), 3.1-3.5% with 10 ms;
//   - DMs at 2,000/s, 2 ms against 50 µs: delivery p50 5.3 and 6.1 ms
//     against 14.4 and 20.5, p99 54 and 44 ms against 71 and 124;
//     throughput 14,224 and 15,641 acked/s against 12,886 and 12,677;
//   - 2, 5 and 10 ms: the same under load, within the runs' spread.
//
// Only timeouts are late: a thread waiting for the network or a lock wakes
// when it is ready, whatever the slack. But the Go scheduler also sleeps for
// a few µs in places (a thread about to steal another's goroutine, say), and
// those sleeps stretch to the slack: with 20 ms the delivery p99 at 1,000/s
// went from 7-15 ms to 22-25 ms.
package timerslack

import "time"

// Max is the largest slack Ensure accepts: beyond it the scheduler's short
// sleeps become visible delays.
const Max = 20 * time.Millisecond
