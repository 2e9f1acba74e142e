package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/client"
)

// buildBinary compiles parley once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is one parley serve process.
type proc struct {
	cmd  *exec.Cmd
	http string
	done chan error
}

const crashSecret = "crash-test-secret-0123456789"

func startProc(t *testing.T, bin, data, httpAddr, peer string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data", data, "--http", httpAddr, "--peer", peer, "--node", "n1", "--log-level", "warn",
		"--gossip", gossipAddrFor(data))
	cmd.Env = append(os.Environ(), "PARLEY_AUTH_SECRET="+crashSecret, "PARLEY_CLUSTER_SHARDS=8",
		"PARLEY_CLUSTER_HEARTBEAT_TIMEOUT=100ms", "PARLEY_CLUSTER_ELECTION_TIMEOUT=100ms",
		"PARLEY_LIMITS_RATE=100000", "PARLEY_LIMITS_BURST=100000")
	logf, _ := os.OpenFile(filepath.Join(filepath.Dir(data), "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, http: httpAddr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("node on %s not ready after 20s", httpAddr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// ack is what a sender was told: its message is committed at (channel, seq).
type ack struct {
	channel, key, body string
	seq                uint64
}

// TestCrash kills a node with SIGKILL at random moments under concurrent
// sends, restarts it on the same data, and checks that every acknowledged
// message is in the history exactly once with gap-free seqs.
// PARLEY_CRASH_ROUNDS sets the number of kills (make chaos runs 50).
func TestCrash(t *testing.T) {
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("PARLEY_CRASH_ROUNDS")); err == nil {
		rounds = v
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	httpAddr, peer := freePort(t), freePort(t)
	p := startProc(t, bin, data, httpAddr, peer)
	defer func() { p.kill() }()

	issuer := auth.NewIssuer([]byte(crashSecret), time.Hour)
	base := "http://" + httpAddr
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	dialUser := func(user string) *client.Client {
		tok, _, _ := issuer.Mint(user)
		c, err := client.Dial(context.Background(), base, client.Options{Token: tok, Reconnect: true, NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		go func() { // nobody reads the pushes here
			for range c.Events() {
			}
		}()
		return c
	}
	owner := dialUser("u0")
	group, err := owner.CreateGroup(ctx, "crash", []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7"})
	if err != nil {
		t.Fatal(err)
	}
	owner.Close()

	const senders = 8
	var (
		mu       sync.Mutex
		acks     []ack
		lastOK   atomic.Int64
		worstGap atomic.Int64
		wg       sync.WaitGroup
	)
	lastOK.Store(time.Now().UnixNano())
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialUser(fmt.Sprintf("u%d", i))
			defer c.Close()
			for n := 0; ctx.Err() == nil; n++ {
				a := client.SendArgs{Key: fmt.Sprintf("u%d-%d", i, n), Body: fmt.Sprintf("m %d from u%d", n, i)}
				if n%2 == 0 {
					a.Channel = group.Channel
				} else {
					a.To = fmt.Sprintf("u%d", (i+1)%senders)
				}
				// Retry with the same key until it is acknowledged; the
				// test's end (ctx) may leave one unacknowledged.
				sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				s, err := sendUntil(sctx, ctx, c, a)
				cancel()
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				if gap := now - lastOK.Swap(now); gap > worstGap.Load() {
					worstGap.Store(gap)
				}
				mu.Lock()
				acks = append(acks, ack{channel: s.Channel, key: a.Key, body: a.Body, seq: s.Seq})
				mu.Unlock()
			}
		}()
	}
	for r := range rounds {
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		p.kill()
		t.Logf("round %d: killed with %d acknowledged so far", r+1, countAcks(&mu, &acks))
		p = startProc(t, bin, data, httpAddr, peer)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()

	audit(t, issuer, base, acks, time.Duration(worstGap.Load()))
}

// sendUntil retries one send (same key) until it is acknowledged, or until
// end is done and the send has failed once more.
func sendUntil(sctx, end context.Context, c *client.Client, a client.SendArgs) (client.Sent, error) {
	for {
		s, err := c.Send(sctx, a)
		if err == nil {
			return s, nil
		}
		if end.Err() != nil || sctx.Err() != nil {
			return s, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countAcks(mu *sync.Mutex, acks *[]ack) int {
	mu.Lock()
	defer mu.Unlock()
	return len(*acks)
}

// audit reads every channel's whole history and checks the acknowledged
// messages against it.
func audit(t *testing.T, issuer *auth.Issuer, base string, acks []ack, worstGap time.Duration) {
	t.Helper()
	tok, _, _ := issuer.Mint("u0")
	c, err := client.Dial(context.Background(), base, client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	byChannel := map[string][]ack{}
	for _, a := range acks {
		byChannel[a.channel] = append(byChannel[a.channel], a)
	}
	var lost, dups, gaps, stored int
	readers := map[string]*client.Client{}
	for ch := range byChannel {
		reader := c
		if rest, ok := strings.CutPrefix(ch, "dm:"); ok { // u0 is not in every DM: read as its first user
			u, _, _ := strings.Cut(rest, ":")
			if readers[u] == nil {
				tok, _, _ := issuer.Mint(u)
				if readers[u], err = client.Dial(context.Background(), base, client.Options{Token: tok}); err != nil {
					t.Fatal(err)
				}
				defer readers[u].Close()
			}
			reader = readers[u]
		}
		history := fetchAll(t, reader, ch)
		stored += len(history)
		keys := map[string]int{}
		for i, m := range history {
			if m.Seq != uint64(i+1) {
				gaps++
			}
			keys[m.From+"/"+m.Key]++
			if keys[m.From+"/"+m.Key] == 2 {
				dups++
			}
		}
		for _, a := range byChannel[ch] {
			if a.seq < 1 || a.seq > uint64(len(history)) || history[a.seq-1].Key != a.key || history[a.seq-1].Body != a.body {
				lost++
			}
		}
	}
	t.Logf("acked %d, stored %d, lost %d, duplicates %d, gaps %d, longest time without a successful send %v",
		len(acks), stored, lost, dups, gaps, worstGap.Round(time.Millisecond))
	if len(acks) == 0 || lost > 0 || dups > 0 || gaps > 0 {
		t.Fatal("the crash test found lost, duplicated or missing messages (or no message was acknowledged)")
	}
}

func fetchAll(t *testing.T, c *client.Client, ch string) []client.Message {
	var all []client.Message
	after := uint64(0)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		page, err := c.History(ctx, ch, client.HistoryQuery{After: &after, Limit: 1000})
		cancel()
		if err != nil {
			t.Fatalf("history of %s: %v", ch, err)
		}
		all = append(all, page.Messages...)
		if len(page.Messages) < 1000 {
			return all
		}
		after = page.Messages[len(page.Messages)-1].Seq
	}
}

func netListen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// gossipAddrFor gives a lone test node a gossip port of its own, kept
// across its restarts.
var gossipAddrs sync.Map

func gossipAddrFor(data string) string {
	if a, ok := gossipAddrs.Load(data); ok {
		return a.(string)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	gossipAddrs.Store(data, addr)
	return addr
}
