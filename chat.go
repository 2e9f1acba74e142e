package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/parleychat/parley/client"
)

const chatHelp = `commands:
  @bob hello          message bob (later lines without a prefix go to bob too)
  #g:abc hello        message a channel
  /group NAME a b     create a group with members a and b
  /add CH a b         add members          /leave CH      leave a group
  /channels           list your channels   /history CH    show a channel's last messages
  /quit`

// chatCmd is a line-oriented chat client on the client package.
func chatCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "your user id")
	srv := fs.String("server", "http://127.0.0.1:8080", "the node to connect to")
	register := fs.Bool("register", false, "create the account first (an existing one is fine)")
	password := fs.String("password", "", "password (default: $PARLEY_PASSWORD, else asked)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley chat --user NAME [flags]\n\nflags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nexample:\n  parley chat --user alice --register\n\n"+chatHelp)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		fs.Usage()
		return errors.New("chat: --user is required")
	}
	in := bufio.NewScanner(stdin)
	pw, err := readPassword(*password, in, stderr)
	if err != nil {
		return err
	}
	if *register {
		var e *client.Error
		if err := client.Register(ctx, *srv, *user, pw); err != nil && !(errors.As(err, &e) && e.Code == "conflict") {
			return fmt.Errorf("register: %w", err)
		}
	}
	c, err := client.Dial(ctx, *srv, client.Options{Reconnect: true, TokenFunc: func(ctx context.Context) (string, error) {
		tok, _, err := client.Login(ctx, *srv, *user, pw)
		return tok, err
	}})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *srv, err)
	}
	defer c.Close()
	fmt.Fprintf(stdout, "connected to %s as %s. Type /help for help.\n", c.Node(), c.User())
	go printEvents(c, stdout)
	return chatLoop(ctx, c, in, stdout)
}

func readPassword(given string, in *bufio.Scanner, stderr io.Writer) (string, error) {
	if given != "" {
		return given, nil
	}
	if pw := os.Getenv("PARLEY_PASSWORD"); pw != "" {
		return pw, nil
	}
	fmt.Fprint(stderr, "password: ")
	if term.IsTerminal(int(os.Stdin.Fd())) {
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		return string(b), err
	}
	if !in.Scan() {
		return "", errors.New("chat: no password given")
	}
	return in.Text(), nil
}

func printEvents(c *client.Client, out io.Writer) {
	for ev := range c.Events() {
		switch ev.Type {
		case "message":
			fmt.Fprintf(out, "[%s #%d %s] %s: %s\n", ev.Channel, ev.Seq, time.UnixMilli(ev.Ts).Format("15:04"), ev.From, ev.Body)
			if ev.From != c.User() {
				c.Fire(context.Background(), map[string]any{"type": "receipt", "channel": ev.Channel, "seq": ev.Seq, "status": "read"})
			}
		case "receipt":
			if ev.User != c.User() {
				fmt.Fprintf(out, "  (%s has %s %s up to #%d)\n", ev.User, ev.Status, ev.Channel, ev.Seq)
			}
		case "members":
			fmt.Fprintf(out, "  (%s: added %v, removed %v)\n", ev.Channel, ev.Added, ev.Removed)
		case "typing":
			fmt.Fprintf(out, "  (%s is typing in %s)\n", ev.User, ev.Channel)
		}
	}
}

func chatLoop(ctx context.Context, c *client.Client, in *bufio.Scanner, out io.Writer) error {
	target := client.SendArgs{}
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := chatLine(rctx, c, line, &target, out)
		cancel()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			fmt.Fprintln(out, "error:", err)
		}
	}
	return in.Err()
}

func chatLine(ctx context.Context, c *client.Client, line string, target *client.SendArgs, out io.Writer) error {
	word, rest, _ := strings.Cut(line, " ")
	switch {
	case word == "/quit":
		return io.EOF
	case word == "/help":
		fmt.Fprintln(out, chatHelp)
		return nil
	case word == "/channels":
		chs, err := c.Channels(ctx)
		for _, ch := range chs {
			fmt.Fprintf(out, "  %-40s %-5s %-16s last #%d, read #%d\n", ch.Channel, ch.Kind, ch.Name, ch.LastSeq, ch.ReadSeq)
		}
		return err
	case word == "/history":
		page, err := c.History(ctx, rest, client.HistoryQuery{Before: ptr(^uint64(0) >> 1), Limit: 20})
		for _, m := range page.Messages {
			fmt.Fprintf(out, "  [#%d] %s: %s\n", m.Seq, m.From, m.Body)
		}
		return err
	case word == "/group":
		f := strings.Fields(rest)
		if len(f) == 0 {
			return errors.New("usage: /group NAME MEMBER [MEMBER]")
		}
		g, err := c.CreateGroup(ctx, f[0], f[1:])
		if err == nil {
			fmt.Fprintf(out, "  created %s (%s) with %v\n", g.Channel, g.Name, g.Members)
			*target = client.SendArgs{Channel: g.Channel}
		}
		return err
	case word == "/add":
		f := strings.Fields(rest)
		if len(f) < 2 {
			return errors.New("usage: /add CHANNEL MEMBER [MEMBER]")
		}
		return c.AddMembers(ctx, f[0], f[1:])
	case word == "/leave":
		return c.Leave(ctx, rest)
	case strings.HasPrefix(word, "@"):
		*target = client.SendArgs{To: word[1:]}
		line = rest
	case strings.HasPrefix(word, "#"):
		*target = client.SendArgs{Channel: word[1:]}
		line = rest
	case strings.HasPrefix(word, "/"):
		return fmt.Errorf("unknown command %s: try /help", word)
	}
	if target.To == "" && target.Channel == "" {
		return errors.New("say who to: @user message, or #channel message")
	}
	if line == "" {
		return nil
	}
	msg := *target
	msg.Body = line
	_, err := c.Send(ctx, msg)
	return err
}

func ptr[T any](v T) *T { return &v }
