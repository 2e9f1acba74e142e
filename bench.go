package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/server"
)

const benchUsage = `usage: parley bench [flags] MODE

Load for a parley node or cluster, on the Go client.
MODE is one of:
  dm          open-loop direct messages at --rate among --users connected users, in
              fixed pairs; latency counts from each send's scheduled time (no
              coordinated omission)
  throughput  --senders concurrent senders, each with --window sends in flight (a
              closed loop: the next send goes when an ack comes back)
  group       one message per 1/--rate seconds to a group of --members, all connected;
              reports when the median and the last member got each message
  conns       open and hold --conns idle sessions; reports server memory per session
  history     --senders sessions, each first sends --fill messages to its own
              conversation, then fetches pages of --page messages from it (at
              random places, a closed loop) for --duration; reports fetch latency
  machine     no load: what this machine charges for a syscall, a loopback TCP
              round trip and a synced 1 KiB append (in --dir), which the other
              modes' results scale with

Tokens are minted with the cluster's auth.secret (--secret, PARLEY_AUTH_SECRET,
or the secret a single node keeps in --data).

examples:
  parley bench --rate 2000 --users 1000 --duration 20s dm
  parley bench --servers http://127.0.0.1:8080,http://127.0.0.2:8080 --senders 64 throughput
  parley bench --members 5000 --rate 1 group
`

type benchOpts struct {
	servers    []string
	secret     []byte
	users      int
	rate       float64
	duration   time.Duration
	senders    int
	window     int
	members    int
	conns      int
	fill, page int
	hold       time.Duration
	procs      int  // load processes for conns (0: as many as the file limit needs)
	connsFrom  int  // first user index of a child's share
	connsChild bool // this process holds a share for a parent
	json       bool
	out        io.Writer
	cpuprofile string // the load tool's CPU profile of the measured phase
}

// benchResult is what a run prints at the end (and with --json).
type benchResult struct {
	Mode       string         `json:"mode"`
	Offered    float64        `json:"offered_per_s,omitempty"`
	Achieved   float64        `json:"achieved_per_s"`
	Sent       int64          `json:"acked"`
	Errors     map[string]int `json:"errors_by_code"`
	Ack        *latency       `json:"ack_ms,omitempty"`
	Delivery   *latency       `json:"delivery_ms,omitempty"`
	LastMember *latency       `json:"last_member_ms,omitempty"`
	Median     *latency       `json:"median_member_ms,omitempty"`
	Fetch      *latency       `json:"fetch_ms,omitempty"`
	Messages   int64          `json:"messages_read,omitempty"`
	Senders    int            `json:"senders,omitempty"`
	Window     int            `json:"window,omitempty"`
	Sessions   int            `json:"sessions,omitempty"`
	PerSession float64        `json:"server_bytes_per_session,omitempty"`
	// Undelivered counts acknowledged DMs whose recipient, online all
	// along, had no message event for them 5 s after the last ack.
	Undelivered int64 `json:"undelivered,omitempty"`
}

type latency struct {
	N                        int
	P50, P90, P99, P999, Max float64 // ms
}

// summarize computes exact percentiles of samples (in ms).
func summarize(samples []float64) *latency {
	if len(samples) == 0 {
		return nil
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		i := int(q * float64(len(samples)-1))
		return float64(int(samples[i]*100)) / 100
	}
	return &latency{N: len(samples), P50: at(.5), P90: at(.9), P99: at(.99), P999: at(.999), Max: at(1)}
}

func (l *latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]float64{"n": float64(l.N), "p50": l.P50, "p90": l.P90, "p99": l.P99, "p99.9": l.P999, "max": l.Max})
}

func (l *latency) String() string {
	if l == nil {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms  (n=%d)", l.P50, l.P90, l.P99, l.P999, l.Max, l.N)
}

// recorder collects latency samples and error codes from many goroutines.
type recorder struct {
	mu     sync.Mutex
	ack    []float64
	deliv  []float64
	errors map[string]int
	acked  atomic.Int64
	got    atomic.Int64
}

func newRecorder() *recorder { return &recorder{errors: map[string]int{}} }

func (r *recorder) ackAt(d time.Duration) {
	r.acked.Add(1)
	r.mu.Lock()
	r.ack = append(r.ack, float64(d.Microseconds())/1000)
	r.mu.Unlock()
}

func (r *recorder) deliveredAt(d time.Duration) {
	r.got.Add(1)
	r.mu.Lock()
	r.deliv = append(r.deliv, float64(d.Microseconds())/1000)
	r.mu.Unlock()
}

// slowestSince returns how many deliveries (or, where none are counted,
// acks) have been recorded, and the slowest of those from the nth on.
func (r *recorder) slowestSince(n int) (int, float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lat := r.deliv
	if len(lat) == 0 {
		lat = r.ack
	}
	slowest := 0.0
	for _, v := range lat[min(n, len(lat)):] {
		slowest = max(slowest, v)
	}
	return len(lat), slowest
}

func (r *recorder) fail(err error) {
	code := "network"
	var ce *client.Error
	switch {
	case errors.As(err, &ce):
		code = ce.Code
	case errors.Is(err, context.DeadlineExceeded):
		code = "timeout"
	case errors.Is(err, client.ErrClosed):
		code = "connection_closed" // the session ended (the server closed it: see the sender's log)
	}
	r.mu.Lock()
	r.errors[code]++
	r.mu.Unlock()
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	servers := fs.String("servers", "http://127.0.0.1:8080", "comma-separated node URLs; users are spread over them")
	secret := fs.String("secret", "", "the cluster's auth.secret (default $PARLEY_AUTH_SECRET, else the one in --data)")
	data := fs.String("data", "./parley-data", "a single node's data directory, for its generated secret")
	o := benchOpts{out: stdout}
	fs.IntVar(&o.users, "users", 1000, "connected users (dm)")
	fs.Float64Var(&o.rate, "rate", 2000, "offered messages per second (dm, group)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long to send")
	fs.IntVar(&o.senders, "senders", 64, "concurrent senders (throughput)")
	fs.IntVar(&o.window, "window", 16, "sends in flight per sender (throughput)")
	fs.IntVar(&o.members, "members", 1000, "group members, all connected (group)")
	fs.IntVar(&o.conns, "conns", 1000, "idle sessions to hold (conns)")
	fs.IntVar(&o.fill, "fill", 500, "messages each conversation gets before reading (history)")
	fs.IntVar(&o.page, "page", 50, "messages per history page (history)")
	fs.DurationVar(&o.hold, "hold", 0, "keep the sessions open this long after measuring, to inspect the server (conns)")
	fs.IntVar(&o.procs, "procs", 0, "processes holding the sessions (conns; 0: one per 19,000, the file limit)")
	fs.IntVar(&o.connsFrom, "conns-from", 0, "internal: a child's first user index")
	fs.BoolVar(&o.connsChild, "conns-child", false, "internal: hold a share of the sessions for a parent bench process")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	cpuprofile := fs.String("cpuprofile", "", "write the load tool's own CPU profile to this file")
	dir := fs.String("dir", os.TempDir(), "where to time synced appends (machine): the disk the nodes' data is on")
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage+"\nflags:\n"); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("bench: give one mode")
	}
	if fs.Arg(0) == "machine" { // no servers, no secret
		return benchMachine(*dir, o.json, stdout)
	}
	o.servers = strings.Split(*servers, ",")
	switch {
	case *secret != "":
		o.secret = []byte(*secret)
	case os.Getenv("PARLEY_AUTH_SECRET") != "":
		o.secret = []byte(os.Getenv("PARLEY_AUTH_SECRET"))
	default:
		cfg := config.Default()
		cfg.Data = *data
		s, err := server.ResolveSecret(cfg)
		if err != nil {
			return fmt.Errorf("bench: no secret: %w", err)
		}
		o.secret = s
	}
	o.cpuprofile = *cpuprofile
	var res benchResult
	var err error
	switch mode := fs.Arg(0); mode {
	case "dm":
		res, err = benchDM(ctx, o)
	case "throughput":
		res, err = benchThroughput(ctx, o)
	case "group":
		res, err = benchGroup(ctx, o)
	case "conns":
		res, err = benchConns(ctx, o)
	case "history":
		res, err = benchHistory(ctx, o)
	default:
		return fmt.Errorf("bench: unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printResult(stdout, res)
	return nil
}

func printResult(w io.Writer, r benchResult) {
	fmt.Fprintf(w, "\n%s:", r.Mode)
	if r.Offered > 0 {
		fmt.Fprintf(w, " offered %.0f/s,", r.Offered)
	}
	if r.Senders > 0 {
		fmt.Fprintf(w, " %d senders x %d in flight,", r.Senders, r.Window)
	}
	switch {
	case r.Fetch != nil:
		fmt.Fprintf(w, " %.0f pages/s, %d pages\n", r.Achieved, r.Sent)
	case r.Mode == "conns":
		fmt.Fprintf(w, " %.0f sessions opened a second (%d at a time from each load process)\n", r.Achieved, connsDialers)
	default:
		fmt.Fprintf(w, " achieved %.0f/s, acked %d\n", r.Achieved, r.Sent)
	}
	if r.Ack != nil {
		fmt.Fprintf(w, "  ack (send -> sent):          %s\n", r.Ack)
	}
	if r.Delivery != nil {
		fmt.Fprintf(w, "  delivery (send -> message):  %s\n", r.Delivery)
	}
	if r.Undelivered > 0 {
		fmt.Fprintf(w, "  undelivered: %d acknowledged, never pushed to their online recipient (5 s after the last ack)\n", r.Undelivered)
	}
	if r.Median != nil {
		fmt.Fprintf(w, "  median member:               %s\n", r.Median)
		fmt.Fprintf(w, "  last member:                 %s\n", r.LastMember)
	}
	if r.Fetch != nil {
		fmt.Fprintf(w, "  fetch (request -> page):     %s\n", r.Fetch)
		fmt.Fprintf(w, "  messages read: %d (and checked: each page as long as asked)\n", r.Messages)
	}
	if r.Sessions > 0 {
		fmt.Fprintf(w, "  sessions held: %d, server memory per session: %.1f KiB\n", r.Sessions, r.PerSession/1024)
	}
	fmt.Fprintf(w, "  errors by code: %v\n", r.Errors)
}

// connectUsers dials one client per user, spread over the servers, with a
// few dials at a time. onEvent receives every pushed message.
func connectUsers(ctx context.Context, o benchOpts, users []string, onEvent func(user string, ev client.Event)) ([]*client.Client, error) {
	issuer := auth.NewIssuer(o.secret, 24*time.Hour)
	clients := make([]*client.Client, len(users))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for i, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tok, _, _ := issuer.Mint(u)
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := client.Dial(dctx, o.servers[i%len(o.servers)], client.Options{Token: tok, NoSync: true, InlineEvents: true,
				OnEvent: func(ev client.Event) { // quick, and never waits for a reply (InlineEvents)
					if ev.Type == "message" && onEvent != nil {
						onEvent(u, ev)
					}
				}})
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		closeAll(clients)
		return nil, fmt.Errorf("bench: connect: %w", *e)
	}
	return clients, nil
}

func closeAll(cs []*client.Client) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// profileMeasured starts the load tool's CPU profile, if one was asked
// for, when the measured phase begins (after connecting and any warm-up),
// and returns what stops it.
func profileMeasured(o benchOpts) (stop func()) {
	if o.cpuprofile == "" {
		return func() {}
	}
	f, err := os.Create(o.cpuprofile)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "parley: bench: cpu profile: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// progress prints a line a second until stop closes: the counts so far,
// and the slowest delivery (or ack) recorded in that second, so that a
// stall shows when it happened (the end's percentiles cannot).
func progress(o benchOpts, rec *recorder, stop <-chan struct{}) {
	if o.json {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	seen := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			var slowest float64
			seen, slowest = rec.slowestSince(seen)
			fmt.Fprintf(o.out, "%5.0fs  acked %d  delivered %d  slowest this second %.1f ms\n",
				time.Since(start).Seconds(), rec.acked.Load(), rec.got.Load(), slowest)
		}
	}
}

func benchDM(ctx context.Context, o benchOpts) (benchResult, error) {
	users := userNames("bench", o.users)
	rec := newRecorder()
	var scheduled sync.Map // key -> scheduled time
	clients, err := connectUsers(ctx, o, users, func(user string, ev client.Event) {
		if t, ok := scheduled.Load(ev.Key); ok && ev.From != user {
			rec.deliveredAt(ev.Received.Sub(t.(time.Time)))
		}
	})
	if err != nil {
		return benchResult{}, err
	}
	defer closeAll(clients)
	stop := make(chan struct{})
	go progress(o, rec, stop)
	defer profileMeasured(o)()
	start := time.Now()
	n := int(o.rate * o.duration.Seconds())
	var wg sync.WaitGroup
	run := fmt.Sprintf("%x", rand.Uint32())
	for i := range n {
		at := start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
		sleepUntil(at) // the schedule, not the acks, sets the pace: open loop
		// Conversations are fixed pairs (2k, 2k+1), as in a real chat
		// where people keep talking to the same few others.
		from := rand.IntN(len(users) / 2 * 2)
		to := from ^ 1
		key := fmt.Sprintf("%s-%d", run, i)
		scheduled.Store(key, at)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, err := clients[from].Send(sctx, client.SendArgs{To: users[to], Body: "benchmark message " + key, Key: key}); err != nil {
				rec.fail(err)
				return
			}
			rec.ackAt(time.Since(at))
		}()
	}
	wg.Wait()
	// The rate is the sends' (to the last ack); the wait for deliveries
	// still on their way is not in it, so a missing one does not halve it.
	elapsed := time.Since(start)
	waitFor(func() bool { return rec.got.Load() >= rec.acked.Load() }, 5*time.Second)
	close(stop)
	return benchResult{Mode: "dm", Offered: o.rate, Achieved: float64(rec.acked.Load()) / elapsed.Seconds(),
		Sent: rec.acked.Load(), Errors: rec.errors, Ack: summarize(rec.ack), Delivery: summarize(rec.deliv),
		Undelivered: max(0, rec.acked.Load()-rec.got.Load())}, nil
}

// errorPause is how long a closed-loop sender or reader waits after a
// refusal before it tries again, as a client would: one that retried at
// once spun on a shard that was electing a leader, counting an error each
// time, and loaded the nodes that were recovering.
const errorPause = 50 * time.Millisecond

func benchThroughput(ctx context.Context, o benchOpts) (benchResult, error) {
	users := userNames("tp", o.senders)
	rec := newRecorder()
	clients, err := connectUsers(ctx, o, users, nil)
	if err != nil {
		return benchResult{}, err
	}
	defer closeAll(clients)
	stop := make(chan struct{})
	go progress(o, rec, stop)
	defer profileMeasured(o)()
	start := time.Now()
	deadline := start.Add(o.duration)
	// No send outlives the run by more than 30 s: one context for all of
	// them, as a timer per send cost the tool about a microsecond each.
	sctx, cancel := context.WithDeadline(ctx, deadline.Add(30*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for i, c := range clients {
		// A sender is one session with up to --window sends in flight, as a
		// client pipelining its outbox; each slot sends again on its ack.
		for range max(o.window, 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					t0 := time.Now()
					_, err := c.Send(sctx, client.SendArgs{To: users[(i+1)%len(users)], Body: "throughput"})
					if err != nil {
						rec.fail(err)
						if errors.Is(err, client.ErrClosed) {
							// This sender's session is gone: say so once
							// per slot, and do not spin on it.
							fmt.Fprintf(os.Stderr, "parley: bench: %s's session ended: %v\n", users[i], c.Err())
							return
						}
						time.Sleep(errorPause)
						continue
					}
					rec.ackAt(time.Since(t0))
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	return benchResult{Mode: "throughput", Senders: len(clients), Window: max(o.window, 1), Achieved: float64(rec.acked.Load()) / elapsed.Seconds(),
		Sent: rec.acked.Load(), Errors: rec.errors, Ack: summarize(rec.ack)}, nil
}

// benchHistory measures reading history: each session fills its own
// conversation (sender i and i^1 share one), then fetches pages from
// random places in it, one at a time, until the time is up. Achieved is
// pages a second; Sent the pages read.
func benchHistory(ctx context.Context, o benchOpts) (benchResult, error) {
	n := max(o.senders, 2) / 2 * 2
	users := userNames("hist", n)
	clients, err := connectUsers(ctx, o, users, nil)
	if err != nil {
		return benchResult{}, err
	}
	defer closeAll(clients)
	if !o.json {
		fmt.Fprintf(o.out, "filling %d conversations with %d messages each\n", n/2, o.fill)
	}
	channels := make([]string, n)
	var fillErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := 0; i < n; i += 2 {
		for range max(o.window, 1) { // as in throughput: a few sends in flight per session
			wg.Add(1)
			go func() {
				defer wg.Done()
				for fillErr.Load() == nil {
					sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					s, err := clients[i].Send(sctx, client.SendArgs{To: users[i+1], Body: "history benchmark message"})
					cancel()
					if err != nil {
						fillErr.CompareAndSwap(nil, &err)
						return
					}
					channels[i], channels[i+1] = s.Channel, s.Channel
					if s.Seq >= uint64(o.fill) {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if p := fillErr.Load(); p != nil {
		return benchResult{}, fmt.Errorf("bench: filling the conversations: %w", *p)
	}
	rec := newRecorder()
	var read atomic.Int64
	stop := make(chan struct{})
	go progress(o, rec, stop)
	defer profileMeasured(o)()
	start := time.Now()
	deadline := start.Add(o.duration)
	page := max(o.page, 1)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				// A page that ends at a random message, as a user scrolling
				// back; the newest page as often as any other.
				before := uint64(rand.IntN(o.fill)) + 2
				t0 := time.Now()
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				p, err := c.History(sctx, channels[i], client.HistoryQuery{Before: &before, Limit: page})
				cancel()
				if err != nil {
					rec.fail(err)
					if errors.Is(err, client.ErrClosed) {
						return
					}
					time.Sleep(errorPause)
					continue
				}
				if want := min(int(before)-1, page); len(p.Messages) != want {
					rec.fail(&client.Error{Code: "wrong_page", Message: fmt.Sprintf("a page before %d has %d messages, want %d", before, len(p.Messages), want)})
					continue
				}
				read.Add(int64(len(p.Messages)))
				rec.ackAt(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	return benchResult{Mode: "history", Senders: n, Window: 1, Achieved: float64(rec.acked.Load()) / elapsed.Seconds(),
		Sent: rec.acked.Load(), Errors: rec.errors, Fetch: summarize(rec.ack), Messages: read.Load()}, nil
}

func benchGroup(ctx context.Context, o benchOpts) (benchResult, error) {
	users := userNames("gm", o.members)
	rec := newRecorder()
	var mu sync.Mutex
	arrivals := map[string][]float64{} // key -> delivery latencies (ms)
	var scheduled sync.Map
	warmKey := fmt.Sprintf("warmup-%x", rand.Uint32())
	var warm atomic.Int64
	clients, err := connectUsers(ctx, o, users, func(user string, ev client.Event) {
		if ev.Key == warmKey {
			warm.Add(1)
			return
		}
		if t, ok := scheduled.Load(ev.Key); ok {
			d := float64(ev.Received.Sub(t.(time.Time)).Microseconds()) / 1000
			mu.Lock()
			arrivals[ev.Key] = append(arrivals[ev.Key], d)
			mu.Unlock()
			rec.got.Add(1)
		}
	})
	if err != nil {
		return benchResult{}, err
	}
	defer closeAll(clients)
	gctx, cancel := context.WithTimeout(ctx, time.Minute)
	g, err := clients[0].CreateGroup(gctx, "bench", users[1:])
	cancel()
	if err != nil {
		return benchResult{}, fmt.Errorf("bench: create group: %w", err)
	}
	// Warm up: creating the group pushes every member a members event
	// listing all the others (quadratic in the size, by the protocol); one
	// message reaching everyone says that is over and the measuring begins.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = clients[0].Send(wctx, client.SendArgs{Channel: g.Channel, Body: "warm-up", Key: warmKey})
	cancel()
	if err != nil {
		return benchResult{}, fmt.Errorf("bench: warm-up message: %w", err)
	}
	if !waitFor(func() bool { return warm.Load() >= int64(len(users)) }, 2*time.Minute) {
		return benchResult{}, fmt.Errorf("bench: the warm-up message reached %d of %d members in 2 minutes%s", warm.Load(), len(users), lostSessions(clients))
	}
	stop := make(chan struct{})
	go progress(o, rec, stop)
	defer profileMeasured(o)()
	start := time.Now()
	n := max(1, int(o.rate*o.duration.Seconds()))
	var keys []string
	for i := range n {
		at := start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
		sleepUntil(at)
		key := fmt.Sprintf("g%x-%d", rand.Uint32(), i)
		keys = append(keys, key)
		scheduled.Store(key, at)
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := clients[i%len(clients)].Send(sctx, client.SendArgs{Channel: g.Channel, Body: "to everyone", Key: key}); err != nil {
			rec.fail(err)
		} else {
			rec.ackAt(time.Since(at))
		}
		cancel()
	}
	waitFor(func() bool { return rec.got.Load() >= rec.acked.Load()*int64(len(users)) }, 10*time.Second)
	close(stop)
	var last, median []float64
	mu.Lock()
	for _, k := range keys {
		a := arrivals[k]
		if len(a) < len(users) {
			rec.errors["not_delivered_to_all"]++
			continue
		}
		slices.Sort(a)
		last = append(last, a[len(a)-1])
		median = append(median, a[len(a)/2])
	}
	mu.Unlock()
	return benchResult{Mode: "group", Offered: o.rate, Achieved: float64(rec.acked.Load()) / time.Since(start).Seconds(),
		Sent: rec.acked.Load(), Errors: rec.errors, Ack: summarize(rec.ack), LastMember: summarize(last), Median: summarize(median)}, nil
}

// benchConns holds idle sessions, dialled from several 127.0.0.x source
// addresses and, past what one process may hold open (the file limit),
// from several processes, and reads the servers' memory before and after.
func benchConns(ctx context.Context, o benchOpts) (benchResult, error) {
	if o.connsChild {
		return benchResult{}, connsChild(ctx, o)
	}
	defer profileMeasured(o)() // conns measures the connecting
	before, err := serversMemory(o.servers)
	if err != nil {
		return benchResult{}, err
	}
	procs := o.procs
	if procs < 1 {
		procs = (o.conns + connsPerProcess - 1) / connsPerProcess
	}
	each := (o.conns + procs - 1) / procs
	rec := newRecorder()
	held := 0
	start := time.Now()
	// This process holds the first share; each other share is a child
	// process (parley bench --conns-child) that says "ready" when it holds
	// its sessions and lets them go when its stdin closes.
	var children []*exec.Cmd
	var stdins []io.Closer // a child holds its sessions while its stdin is open
	defer func() {
		for i, c := range children {
			stdins[i].Close()
			c.Wait()
		}
	}()
	for p := 1; p < procs; p++ {
		from := p * each
		n := min(each, o.conns-from)
		if n <= 0 {
			break
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "bench", "--servers", strings.Join(o.servers, ","), "--secret", string(o.secret),
			"--conns", strconv.Itoa(n), "--conns-from", strconv.Itoa(from), "--conns-child", "conns")
		stdin, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return benchResult{}, fmt.Errorf("bench: start a conns process: %w", err)
		}
		children, stdins = append(children, cmd), append(stdins, stdin)
		var got int
		var errs map[string]int
		if _, err := fmt.Fscanf(out, "ready %d\n", &got); err != nil {
			return benchResult{}, fmt.Errorf("bench: a conns process failed: %w", err)
		}
		json.NewDecoder(out).Decode(&errs)
		held += got
		for code, k := range errs {
			rec.errors[code] += k
		}
		if !o.json {
			fmt.Fprintf(o.out, "%d sessions (process %d)\n", held, p+1)
		}
	}
	conns := holdSessions(ctx, o, 0, min(each, o.conns), rec)
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	held += len(conns)
	rate := float64(held) / time.Since(start).Seconds()
	time.Sleep(2 * time.Second) // let the servers settle before measuring
	after, err := serversMemory(o.servers)
	if err != nil {
		return benchResult{}, err
	}
	per := 0.0
	if held > 0 {
		per = float64(after-before) / float64(held)
	}
	if o.hold > 0 {
		fmt.Fprintf(os.Stderr, "holding %d sessions for %v\n", held, o.hold)
		time.Sleep(o.hold)
	}
	return benchResult{Mode: "conns", Achieved: rate, Sessions: held, PerSession: per, Errors: rec.errors}, nil
}

// connsPerProcess is how many sessions one load process holds: under the
// 20,000 files a process may open here.
const connsPerProcess = 19000

// connsChild holds its share of the sessions for a parent bench process.
func connsChild(ctx context.Context, o benchOpts) error {
	rec := newRecorder()
	conns := holdSessions(ctx, o, o.connsFrom, o.conns, rec)
	fmt.Fprintf(o.out, "ready %d\n", len(conns))
	json.NewEncoder(o.out).Encode(rec.errors)
	io.Copy(io.Discard, os.Stdin) // until the parent goes
	for _, c := range conns {
		c.CloseNow()
	}
	return nil
}

// connsDialers is how many sessions holdSessions opens at a time: a
// crowd reconnecting to a node, not one client after another (one at a
// time, each waits out its round trips and the welcome's directory post:
// ~400 sessions a second here).
const connsDialers = 64

// holdSessions opens n sessions for users idle<from>..idle<from+n-1>,
// connsDialers at a time, spread over the servers, each said hello to and
// answering pings; it stops opening more at the first failure (counted in
// rec).
func holdSessions(ctx context.Context, o benchOpts, from, n int, rec *recorder) []*websocket.Conn {
	issuer := auth.NewIssuer(o.secret, 24*time.Hour)
	var (
		mu     sync.Mutex
		conns  []*websocket.Conn
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	sem := make(chan struct{}, connsDialers)
	for i := from; i < from+n && !failed.Load(); i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tok, _, _ := issuer.Mint(fmt.Sprintf("idle%d", i))
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%250))}
			hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: src}).DialContext}}
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(dctx, client.WSURL(o.servers[i%len(o.servers)]), &websocket.DialOptions{HTTPClient: hc})
			if err == nil {
				hello, _ := json.Marshal(map[string]string{"type": "hello", "token": tok})
				err = c.Write(dctx, websocket.MessageText, hello)
				if err == nil {
					_, _, err = c.Read(dctx)
				}
				if err != nil {
					c.CloseNow()
				}
			}
			if err != nil {
				if !failed.Swap(true) {
					rec.fail(err)
				}
				return
			}
			go func() { // answer pings so the server keeps the session
				for {
					if _, _, err := c.Read(context.Background()); err != nil {
						return
					}
				}
			}()
			mu.Lock()
			conns = append(conns, c)
			held := len(conns)
			mu.Unlock()
			if !o.json && !o.connsChild && held%1000 == 0 {
				fmt.Fprintf(o.out, "%d sessions\n", held)
			}
		}()
	}
	wg.Wait()
	return conns
}

// serversMemory sums the servers' resident memory.
func serversMemory(servers []string) (int64, error) {
	var sum int64
	for _, s := range servers {
		m, err := serverMemory(s)
		if err != nil {
			return 0, err
		}
		sum += m
	}
	return sum, nil
}

// serverMemory reads a node's resident memory from /v1/status.
func serverMemory(base string) (int64, error) {
	resp, err := http.Get(client.HTTPBase(base) + "/v1/status?lag=0")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Node struct {
			RSS int64 `json:"rss_bytes"`
		} `json:"node"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Node.RSS == 0 {
		return 0, fmt.Errorf("bench: no rss_bytes in %s/v1/status (from loopback): %v", base, err)
	}
	return st.Node.RSS, nil
}

// lostSessions says how many of clients lost their connection, and the
// first reason, if any did.
func lostSessions(clients []*client.Client) string {
	lost := 0
	var first error
	for _, c := range clients {
		select {
		case <-c.Done():
			lost++
			if first == nil {
				first = c.Err()
			}
		default:
		}
	}
	if lost == 0 {
		return ""
	}
	return fmt.Sprintf("; %d of the sessions ended (the first: %v)", lost, first)
}

// userNames is prefix0, prefix1, ... prefix(n-1).
func userNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// waitFor polls cond until it holds (true) or max has passed (false).
func waitFor(cond func() bool, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
