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
// On the bench cluster (3 nodes, 64 shards) 5 ms took idle CPU from 6.4-7.4%
// of a core to 3.5-4.0%, and loaded latency and throughput measured no
// worse; cluster/DESIGN.md has the runs.
//
// Only timeouts are late: a thread waiting for the network or a lock wakes
// when it is ready, whatever the slack. But the Go scheduler also sleeps for
// a few µs in places (a thread about to steal another's goroutine, say), and
// those sleeps stretch to the slack: 20 ms made DM delivery tails worse.
package timerslack

import "time"

// Max is the largest slack Ensure accepts: beyond it the scheduler's short
// sleeps become visible delays.
const Max = 20 * time.Millisecond
