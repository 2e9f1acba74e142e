package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/client"
)

// A server that stops reading lets a large send fill the client's socket;
// its pings then cannot be answered (the pong waits for the blocked
// write), and coder/websocket closes the connection after 5 s. The
// client's error names that, the read side's failure, not only the
// blocked write's "use of closed network connection", which the close
// caused.
func TestPongTimeoutIsTheError(t *testing.T) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(stopped)
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		if _, _, err := ws.Read(ctx); err != nil { // the hello
			return
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"type":"welcome","user":"u","session":"s","node":"n"}`))
		// Never read again, and ping every 200 ms. Each ping waits for a
		// pong the server does not read; its write has coder/websocket's
		// own 5 s bound (a short context would close the connection
		// whenever a starved test machine let it expire mid-write).
		var pings sync.WaitGroup
		defer func() {
			ws.CloseNow() // ends the pings still waiting
			pings.Wait()
		}()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			pings.Add(1)
			go func() {
				defer pings.Done()
				pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				ws.Ping(pctx)
			}()
		}
	}))
	defer srv.Close()
	defer func() { close(stop); <-stopped }()
	c := dial(t, srv.URL, client.Options{Token: "t", NoSync: true})
	sendErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := c.Send(ctx, client.SendArgs{To: "b", Body: strings.Repeat("x", 64<<20)})
		sendErr <- err
	}()
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the connection is still up")
	}
	if err := <-sendErr; err == nil {
		t.Fatal("the send succeeded")
	}
	err := c.Err()
	if err == nil || strings.HasPrefix(err.Error(), "write: ") || !strings.Contains(err.Error(), "opPong") {
		t.Fatalf("the client stopped with %v; want the failure to answer a ping, first", err)
	}
}
