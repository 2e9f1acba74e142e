package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestMintVerify(t *testing.T) {
	is := NewIssuer([]byte("0123456789abcdef0123"), time.Hour)
	tok, exp, err := is.Mint("alice")
	if err != nil || time.Until(exp) < 59*time.Minute {
		t.Fatal(err, exp)
	}
	if u, err := is.Verify(tok); err != nil || u != "alice" {
		t.Fatalf("Verify = %q, %v", u, err)
	}
	other := NewIssuer([]byte("another secret 0123456"), time.Hour)
	if _, err := other.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("foreign secret: %v", err)
	}
	is.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := is.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	is := NewIssuer(secret, time.Hour)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "a"}).SignedString(secret)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.RegisteredClaims{Subject: "a",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(secret)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "a",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(secret)
	for name, tok := range map[string]string{"no expiry": noExp, "HS512": hs512, "alg none": none, "no subject": noSub, "garbage": "x.y.z", "empty": ""} {
		if _, err := is.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateSecret(dir, false); err == nil {
		t.Fatal("no secret yet, but one was loaded")
	}
	a, err := LoadOrCreateSecret(dir, true)
	if err != nil || len(a) != 64 {
		t.Fatal(a, err)
	}
	b, _ := LoadOrCreateSecret(dir, false)
	if string(a) != string(b) {
		t.Fatal("the secret changed")
	}
}
