package conn_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/config"
)

func TestHTTPRegisterLogin(t *testing.T) {
	e := newEnv(t)
	url := e.base()
	cases := []struct {
		name   string
		path   string
		body   string
		status int
		code   string
	}{
		{"register", "/v1/register", `{"user":"alice","password":"correct horse"}`, 201, ""},
		{"register taken", "/v1/register", `{"user":"alice","password":"other password"}`, 409, "conflict"},
		{"password too short", "/v1/register", `{"user":"bob","password":"1234567"}`, 400, "bad_request"},
		{"password too long", "/v1/register", `{"user":"bob","password":"` + strings.Repeat("x", 257) + `"}`, 400, "bad_request"},
		{"bad user id", "/v1/register", `{"user":"Bob","password":"correct horse"}`, 400, "bad_request"},
		{"invalid JSON", "/v1/register", `{"user":`, 400, "bad_request"},
		{"oversized body", "/v1/register", `{"user":"bob","password":"` + strings.Repeat("x", 20000) + `"}`, 413, "too_large"},
		{"login wrong password", "/v1/login", `{"user":"alice","password":"wrong horse"}`, 401, "unauthorized"},
		{"login unknown user", "/v1/login", `{"user":"nobody","password":"correct horse"}`, 401, "unauthorized"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := postJSON(t, url+c.path, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d (%v)", status, c.status, body)
			}
			if c.code == "" {
				return
			}
			errObj, _ := body["error"].(map[string]any)
			if errObj["code"] != c.code || errObj["message"] == "" {
				t.Fatalf("body %v, want error code %s with a message", body, c.code)
			}
		})
	}
	status, body := postJSON(t, url+"/v1/login", `{"user":"alice","password":"correct horse"}`)
	if status != 200 || body["token"] == "" {
		t.Fatalf("login: %d %v", status, body)
	}
	exp := int64(body["expires_at"].(float64))
	if exp < time.Now().Add(time.Hour).UnixMilli() {
		t.Fatalf("expires_at %d is not in ms in the future", exp)
	}
	// The token opens a session.
	w := e.dialRaw(nil)
	w.send(frame{"type": "hello", "token": body["token"]})
	w.expect("welcome")
}

func TestHTTPRegistrationClosed(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Auth.Registration = "closed" })
	status, body := postJSON(t, e.base()+"/v1/register", `{"user":"alice","password":"correct horse"}`)
	if status != 403 || body["error"].(map[string]any)["code"] != "forbidden" {
		t.Fatalf("%d %v", status, body)
	}
}

func TestHealthAndReady(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.base() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}
