package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/server"
)

// tokenCmd mints a token for a user with the node's secret, like other chat
// servers' gentoken: for scripts, bots and load tests.
func tokenCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "TOML configuration file (also PARLEY_CONFIG)")
	data := fs.String("data", "", "data directory holding the generated secret (default ./parley-data)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley token [flags] USER\n\nPrints a token for USER signed with auth.secret (or the secret a single node keeps in its data directory).\n\nflags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nexample:\n  parley token alice")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("token: give exactly one user")
	}
	user := fs.Arg(0)
	if !channel.ValidUser(user) {
		return fmt.Errorf("token: %q is not a user id (1-32 chars of a-z 0-9 _ . - starting with a letter or digit)", user)
	}
	flags := map[string]string{}
	if *data != "" {
		flags["data"] = *data
	}
	cfg, err := config.Load(*file, os.LookupEnv, flags)
	if err != nil {
		return err
	}
	if cfg.Auth.Secret == "" {
		if _, err := auth.LoadOrCreateSecret(cfg.Data, false); err != nil {
			return fmt.Errorf("token: no auth.secret configured and none in %s yet: start the node once, or set auth.secret", cfg.Data)
		}
	}
	secret, err := server.ResolveSecret(cfg)
	if err != nil {
		return err
	}
	tok, _, err := auth.NewIssuer(secret, *ttl).Mint(user)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
