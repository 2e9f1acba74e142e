package web_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// browser is one headless Chromium with its own profile: a separate user.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is needed for the browser tests: apt-get install -y chromium (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1100, 750))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser on this long-lived context
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx}
}

func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) register(base, user string) {
	b.run("register "+user,
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.ID("#login-user")),
		chromedp.SendKeys(chromedp.ID("#login-user"), user),
		chromedp.SendKeys(chromedp.ID("#login-password"), "password-of-"+user),
		chromedp.Click(chromedp.ID("#register-button")),
		chromedp.WaitVisible(chromedp.ID("#app")),
		chromedp.WaitEnabled(chromedp.ID("#new-group")),
	)
}

// waitText polls until the element's text contains want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	testutil.Eventually(b.t, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		defer cancel()
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			return err
		}
		if !strings.Contains(got, want) {
			return fmt.Errorf("%s shows %q, want %q", sel, got, want)
		}
		return nil
	})
}

// tickOf returns the status title of the last own message.
func (b *browser) waitTick(want string) {
	b.t.Helper()
	testutil.Eventually(b.t, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		defer cancel()
		js := `(() => { const t = [...document.querySelectorAll("#messages .msg.mine .tick")].pop(); return t ? t.title : "" })()`
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("tick %q, want %q", got, want)
		}
		return nil
	})
}

func (b *browser) sendMessage(text string) {
	b.run("send "+text,
		chromedp.WaitEnabled(chromedp.ID("#body")),
		chromedp.SendKeys(chromedp.ID("#body"), text+"\r"), // Enter sends
	)
}

func (b *browser) screenshot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		b.t.Fatal(err)
	}
	dir := filepath.Join("..", "artifacts")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string { return testutil.FreeAddr(t, "127.0.0.1") }

func TestBrowserChat(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	cfg.HTTP = freeAddr(t)
	srv := servertest.Start(t, cfg)
	base := "http://" + cfg.HTTP
	alice, bob := newBrowser(t), newBrowser(t)
	alice.register(base, "alice")
	bob.register(base, "bob")

	// To someone not online yet, a message stays "sent".
	alice.run("open dm with carol", chromedp.SendKeys(chromedp.ID("#new-dm-user"), "carol\r"))
	alice.sendMessage("hi carol")
	alice.waitTick("sent")

	// Alice opens a DM and sends; bob, online elsewhere, gets it delivered.
	alice.run("open dm", chromedp.SendKeys(chromedp.ID("#new-dm-user"), "bob\r"))
	alice.sendMessage("hello bob")
	alice.waitTick("delivered")
	// Bob opens it: he sees the message without a reload, and alice sees it read.
	bob.run("open the dm", chromedp.Click(chromedp.CSS(`#channels li[data-channel="dm:alice:bob"]`)))
	bob.waitText("#messages", "hello bob")
	alice.waitTick("read")
	bob.sendMessage("hi alice")
	alice.waitText("#messages", "hi alice")

	// A group of three (made through the API; the page learns of it live).
	carol := newBrowser(t)
	carol.register(base, "carol")
	tok, _, _ := auth.NewIssuer([]byte(cfg.Auth.Secret), time.Hour).Mint("carol")
	api, err := client.Dial(context.Background(), base, client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	g, err := api.CreateGroup(context.Background(), "trio", []string{"alice", "bob"})
	api.Close()
	if err != nil {
		t.Fatal(err)
	}
	sel := fmt.Sprintf(`#channels li[data-channel=%q]`, g.Channel)
	for _, b := range []*browser{alice, bob, carol} {
		b.run("open the group", chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
	}
	carol.sendMessage("hello trio")
	alice.waitText("#messages", "hello trio")
	bob.waitText("#messages", "hello trio")
	bob.sendMessage("hi carol")
	carol.waitText("#messages", "hi carol")
	carol.waitTick("read by 2 of 2")

	// The server restarts; the page reconnects and shows what was sent meanwhile.
	alice.run("back to the dm", chromedp.Click(chromedp.CSS(`#channels li[data-channel="dm:alice:bob"]`)))
	srv.Close()
	alice.run("banner", chromedp.WaitVisible(chromedp.ID("#banner")))
	srv2, err := server.Start(cfg, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	btok, _, _ := auth.NewIssuer([]byte(cfg.Auth.Secret), time.Hour).Mint("bob")
	bapi, err := client.Dial(context.Background(), base, client.Options{Token: btok})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bapi.Send(context.Background(), client.SendArgs{To: "alice", Body: "sent while you were away"}); err != nil {
		t.Fatal(err)
	}
	bapi.Close()
	alice.waitText("#messages", "sent while you were away")
	alice.run("banner gone", chromedp.WaitNotVisible(chromedp.ID("#banner")))
	count, err := chromedp.Run(alice.ctx, chromedp.Evaluate[int](`document.querySelectorAll("#messages .msg").length`))
	if err != nil {
		t.Fatal(err)
	}
	if count != 3 {
		t.Fatalf("alice's DM shows %d messages after the restart, want 3 (no gaps, no doubles)", count)
	}
	alice.screenshot("chat.png")

	// The status page shows the node and its shards.
	alice.run("status page", chromedp.Navigate(base+"/status"), chromedp.WaitVisible(chromedp.CSS("#shards tbody tr")))
	alice.waitText("#node", srv2.Node().ID())
	alice.waitText("#shards", srv2.Node().ID()) // every shard's leader
	alice.waitText("#members", "alive")
	alice.screenshot("status.png")
}

// shown reports which of the page's two panes are displayed.
func (b *browser) shown() (list, chat bool) {
	b.t.Helper()
	js := `["#app .sidebar", "#app .chat"].map(s => getComputedStyle(document.querySelector(s)).display != "none")`
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]bool](js))
	if err != nil || len(got) != 2 {
		b.t.Fatalf("panes: %v %v", got, err)
	}
	return got[0], got[1]
}

// fits fails the test if the page, or its list of messages, is wider than
// the window: a phone would scroll sideways.
func (b *browser) fits(when string) {
	b.t.Helper()
	js := `["html", "#app", "#channels", "#messages"].map(s => document.querySelector(s)).
		filter(e => e.scrollWidth > e.clientWidth || e.getBoundingClientRect().right > window.innerWidth + 1).
		map(e => e.id || e.tagName)`
	wide, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](js))
	if err != nil {
		b.t.Fatal(err)
	}
	if len(wide) > 0 {
		b.t.Fatalf("%s: wider than the window: %v", when, wide)
	}
}

// On a phone-sized window the page shows one pane at a time: the list of
// conversations, then the open one with a way back; nothing is wider than
// the window, not even a message with a word longer than the screen.
func TestBrowserPhone(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	cfg.HTTP = freeAddr(t)
	servertest.Start(t, cfg)
	base := "http://" + cfg.HTTP
	phone, other := newBrowser(t), newBrowser(t)
	// A phone's screen, touch and all (headless Chromium's window is at
	// least 500 pixels wide).
	phone.run("a phone's screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	phone.register(base, "dana")
	other.register(base, "erin")
	if list, chat := phone.shown(); !list || chat {
		t.Fatalf("after login: list shown %v, conversation shown %v; want only the list", list, chat)
	}
	phone.fits("the list")
	if w, err := chromedp.Run(phone.ctx, chromedp.Evaluate[int](`window.innerWidth`)); err != nil || w != 390 {
		t.Fatalf("the phone's window is %d pixels wide (%v), want 390", w, err)
	}

	phone.run("open a dm", chromedp.SendKeys(chromedp.ID("#new-dm-user"), "erin\r"))
	if list, chat := phone.shown(); list || !chat {
		t.Fatalf("in a conversation: list shown %v, conversation shown %v; want only the conversation", list, chat)
	}
	phone.sendMessage("hello from a phone, with a link https://example.com/" + strings.Repeat("a", 120))
	phone.waitTick("delivered")
	other.run("open the dm", chromedp.Click(chromedp.CSS(`#channels li[data-channel="dm:dana:erin"]`)))
	other.sendMessage("hi dana")
	phone.waitText("#messages", "hi dana")
	phone.fits("a conversation")
	phone.screenshot("chat-phone.png")

	phone.run("back", chromedp.Click(chromedp.ID("#back")))
	if list, chat := phone.shown(); !list || chat {
		t.Fatalf("after back: list shown %v, conversation shown %v; want only the list", list, chat)
	}
	phone.waitText("#channels", "erin")
}
