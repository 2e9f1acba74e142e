// Command parley is a self-hosted chat server: identical nodes that gossip,
// shard channels over Raft groups, and deliver messages peer to peer.
//
//	parley serve [--config FILE] [--node NAME] [--data DIR] [--http ADDR]
//	             [--gossip ADDR] [--peer ADDR] [--join ADDR,ADDR] [--bootstrap-expect N]
//	parley chat --user NAME [--server URL] [--register]
//	parley token USER
//	parley version
package main

import (
	"github.com/parleychat/parley/internal/timerslack"

	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "parley:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: parley <command> [flags]

commands:
  serve     run a node (with no flags: a single node on http://127.0.0.1:8080)
  chat      chat from the command line (parley chat --user alice --register)
  token     print a token for a user, signed with the node's secret
  bench     load a node or cluster and report latency and throughput
  version   print the version

Run "parley <command> -h" for a command's flags.
`

// run is the whole program, callable from tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "token":
		return tokenCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "chat":
		return chatCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "parley", server.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// serveFlags maps each command-line flag to its TOML key.
var serveFlags = []struct{ flag, key, help string }{
	{"node", "node", "node name (default: the host name, then kept in the data directory)"},
	{"data", "data", "data directory (default ./parley-data)"},
	{"http", "http", "client HTTP and WebSocket address (default 127.0.0.1:8080)"},
	{"gossip", "gossip", "gossip (memberlist) address (default 127.0.0.1:7946)"},
	{"peer", "peer", "Raft and node RPC address (default 127.0.0.1:7947)"},
	{"join", "join", "gossip addresses of existing nodes, comma-separated"},
	{"bootstrap-expect", "bootstrap_expect", "nodes that form a new cluster (default 1: a cluster of one)"},
	{"log-level", "log.level", "debug, info, warn or error"},
	{"log-format", "log.format", "text or json"},
}

// parseServe reads serve's flags: the config file and the TOML keys given.
func parseServe(args []string, stderr io.Writer) (file string, set map[string]string, err error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&file, "config", "", "TOML configuration file (also PARLEY_CONFIG)")
	vals := map[string]*string{}
	for _, f := range serveFlags {
		vals[f.flag] = fs.String(f.flag, "", f.help)
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley serve [flags]\n\nSettings come from defaults < --config file < PARLEY_* environment < flags.\n\nflags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nexamples:\n  parley serve\n  parley serve --node n2 --data /var/lib/parley --http 0.0.0.0:8080")
	}
	if err := fs.Parse(args); err != nil {
		return "", nil, err
	}
	if fs.NArg() > 0 {
		return "", nil, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	set = map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		for _, sf := range serveFlags {
			if sf.flag == f.Name {
				set[sf.key] = *vals[f.Name]
			}
		}
	})
	return file, set, nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	file, flags, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(file, os.LookupEnv, flags)
	if err != nil {
		return err
	}
	// Before anything is opened: this may re-execute the program.
	slackErr := timerslack.Ensure(cfg.Process.TimerSlack.Duration)
	log := newLogger(cfg.Log, stderr)
	if slackErr != nil {
		log.Warn("running with the kernel's timer slack", "err", slackErr)
	}
	// Starting opens Pebble, which replays its log and flushes it; on a full
	// or failing disk that retries for as long as the disk says no. A signal
	// meanwhile stops the process instead of being swallowed.
	type started struct {
		srv *server.Server
		err error
	}
	up := make(chan started, 1)
	go func() {
		srv, err := server.Start(cfg, log)
		up <- started{srv, err}
	}()
	var srv *server.Server
	select {
	case s := <-up:
		if s.err != nil {
			return s.err
		}
		srv = s.srv
	case <-ctx.Done():
		return errors.New("stopped while starting (if it hung, look for disk errors above: a full disk stops the database from opening)")
	}
	<-ctx.Done()
	// The first SIGTERM or Ctrl-C drains within 30 s; a second one kills
	// the process: the default handlers are back.
	signal.Reset(os.Interrupt, syscall.SIGTERM)
	log.Info("draining: handing off shards and sessions")
	// DESIGN.md promises the whole drain within 30 s. Handing off gets 25
	// of them; closing waits for Pebble, which a failing disk can hold
	// forever (its flushes retry), so at 30 s the process ends without a
	// clean close. Acknowledged messages are synced already.
	dctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Drain(dctx) }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(30 * time.Second):
		return errors.New("the node did not close within 30 s of the signal (is its disk failing or full?); exiting without a clean close")
	}
	log.Info("stopped")
	return nil
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
