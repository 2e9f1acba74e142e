// Package config holds parley's settings: Default(), then a TOML file over
// it, then PARLEY_* environment variables, then command-line flags. Unknown
// TOML keys are errors, and Validate names the key and the value it refuses.
package config

import (
	"github.com/parleychat/parley/internal/timerslack"

	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is every setting of a parley node. The toml tags are the keys of
// config.example.toml; the environment variable of a top-level key is
// PARLEY_<KEY>, of a section's key PARLEY_<SECTION>_<KEY>.
type Config struct {
	Node            string   `toml:"node"`
	Data            string   `toml:"data"`
	HTTP            string   `toml:"http"`
	Gossip          string   `toml:"gossip"`
	Peer            string   `toml:"peer"`
	Join            []string `toml:"join"`
	BootstrapExpect int      `toml:"bootstrap_expect"`

	Log     Log     `toml:"log"`
	Auth    Auth    `toml:"auth"`
	Cluster Cluster `toml:"cluster"`
	Limits  Limits  `toml:"limits"`
	Web     Web     `toml:"web"`
	Webhook Webhook `toml:"webhook"`
	Store   Store   `toml:"store"`
	Debug   Debug   `toml:"debug"`
	Process Process `toml:"process"`

	// FastGossip shortens memberlist's timers for tests on loopback; it has
	// no key: production gossip keeps memberlist's LAN defaults.
	FastGossip bool `toml:"-"`
}

// Store configures the node's database.
type Store struct {
	CacheMB int `toml:"cache_mb"` // Pebble's block cache
}

// Process configures the node's process.
type Process struct {
	// TimerSlack is how late the kernel may wake the process's threads
	// for an expired timer, so that close wake-ups become one (Linux; 0
	// keeps the kernel's 50 µs). An idle node is mostly timers.
	TimerSlack Duration `toml:"timer_slack"`
	// IdleAfter is how long the node goes without a client connection or
	// frame, a committed entry or a read before it runs on one CPU thread
	// (GOMAXPROCS 1) until the next one; 0 keeps all of them.
	IdleAfter Duration `toml:"idle_after"`
}

// Debug configures what the admin's /debug/pprof endpoints can show.
type Debug struct {
	// ContentionProfiles records lock contention and blocking for the mutex
	// and block profiles, at a cost to every lock wait and blocking
	// operation (see config.example.toml): for a profiling session.
	ContentionProfiles bool `toml:"contention_profiles"`
}

// Webhook configures the outgoing call for offline recipients.
type Webhook struct {
	URL     string   `toml:"url"`
	Secret  string   `toml:"secret"`
	Timeout Duration `toml:"timeout"`
}

// Web configures the browser-facing side.
type Web struct {
	// Origins are host patterns (path.Match syntax, like "chat.example.com"
	// or "*.example.com") allowed to open WebSockets besides the server's
	// own origin.
	Origins []string `toml:"origins"`
}

// Log configures log/slog.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Auth configures accounts and tokens.
type Auth struct {
	Secret       string   `toml:"secret"`       // HS256 key; generated and kept in the data dir if empty on a single node
	Registration string   `toml:"registration"` // open or closed
	TokenTTL     Duration `toml:"token_ttl"`
	BcryptCost   int      `toml:"bcrypt_cost"`
	AdminToken   string   `toml:"admin_token"` // opens /status and /v1/status beyond loopback
}

// Cluster configures shards and Raft.
type Cluster struct {
	Shards           int      `toml:"shards"`
	HeartbeatTimeout Duration `toml:"heartbeat_timeout"`
	ElectionTimeout  Duration `toml:"election_timeout"`
	CommitTimeout    Duration `toml:"commit_timeout"`
	MaxBatch         int      `toml:"max_batch"`
	Inflight         int      `toml:"inflight"`
	Replicas         int      `toml:"replicas"`
	Grace            Duration `toml:"grace"`
	GossipKey        string   `toml:"gossip_key"` // base64 of 16, 24 or 32 bytes

	SnapshotThreshold int      `toml:"snapshot_threshold"`
	TrailingLogs      int      `toml:"trailing_logs"`
	SnapshotInterval  Duration `toml:"snapshot_interval"`
}

// Limits configures what clients may do.
type Limits struct {
	MaxBody         int      `toml:"max_body"`
	MaxFrame        int      `toml:"max_frame"`
	MaxGroup        int      `toml:"max_group"`
	Rate            float64  `toml:"rate"`
	Burst           int      `toml:"burst"`
	SessionsPerUser int      `toml:"sessions_per_user"`
	SendQueue       int      `toml:"send_queue"`
	HelloTimeout    Duration `toml:"hello_timeout"`
	IdleTimeout     Duration `toml:"idle_timeout"`
	WriteTimeout    Duration `toml:"write_timeout"`
}

// Duration is a time.Duration written as "1.5s" in TOML and the environment.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (like 1.5s): %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default is a working single node on loopback.
func Default() Config {
	return Config{
		Data:            "./parley-data",
		HTTP:            "127.0.0.1:8080",
		Gossip:          "127.0.0.1:7946",
		Peer:            "127.0.0.1:7947",
		BootstrapExpect: 1,
		Log:             Log{Level: "info", Format: "text"},
		Auth:            Auth{Registration: "open", TokenTTL: Duration{24 * time.Hour}, BcryptCost: 10},
		Cluster: Cluster{Shards: 64, HeartbeatTimeout: Duration{time.Second},
			ElectionTimeout: Duration{time.Second}, CommitTimeout: Duration{time.Minute},
			MaxBatch: 512, Inflight: 4, Replicas: 3, Grace: Duration{30 * time.Second},
			SnapshotThreshold: 8192, TrailingLogs: 10240, SnapshotInterval: Duration{2 * time.Minute}},
		Limits: Limits{MaxBody: 4096, MaxFrame: 256 << 10, MaxGroup: 5000, Rate: 50, Burst: 100,
			SessionsPerUser: 16, SendQueue: 256, HelloTimeout: Duration{10 * time.Second},
			IdleTimeout: Duration{30 * time.Second}, WriteTimeout: Duration{10 * time.Second}},
		Webhook: Webhook{Timeout: Duration{5 * time.Second}},
		Store:   Store{CacheMB: 128},
		Process: Process{TimerSlack: Duration{5 * time.Millisecond}, IdleAfter: Duration{10 * time.Second}},
	}
}

// LoadFile decodes a TOML file over c. Keys the file has that Config does
// not are an error naming them.
func (c *Config) LoadFile(path string) error {
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	return nil
}

// setting is one leaf of Config, with its names.
type setting struct {
	key   string // TOML key, dotted for sections: auth.secret
	env   string // PARLEY_AUTH_SECRET
	field reflect.Value
}

// settings lists every leaf of c, in declaration order.
func (c *Config) settings() []setting {
	var out []setting
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f, tag := v.Field(i), v.Type().Field(i).Tag.Get("toml")
		if tag == "-" {
			continue
		}
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeFor[Duration]() {
			for j := range f.NumField() {
				sub := f.Type().Field(j).Tag.Get("toml")
				out = append(out, setting{key: tag + "." + sub,
					env: "PARLEY_" + strings.ToUpper(tag+"_"+sub), field: f.Field(j)})
			}
			continue
		}
		out = append(out, setting{key: tag, env: "PARLEY_" + strings.ToUpper(tag), field: f})
	}
	return out
}

// LoadEnv applies PARLEY_* variables from lookup (os.LookupEnv in main).
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	for _, s := range c.settings() {
		if val, ok := lookup(s.env); ok {
			if err := set(s.field, val); err != nil {
				return fmt.Errorf("environment %s=%q: %w", s.env, val, err)
			}
		}
	}
	return nil
}

// Set assigns a setting by its TOML key from a string, as flags do.
func (c *Config) Set(key, val string) error {
	for _, s := range c.settings() {
		if s.key == key {
			if err := set(s.field, val); err != nil {
				return fmt.Errorf("%s=%q: %w", key, val, err)
			}
			return nil
		}
	}
	return fmt.Errorf("unknown setting %s", key)
}

// EnvNames lists every environment variable with its TOML key, for docs and tests.
func (c *Config) EnvNames() map[string]string {
	out := map[string]string{}
	for _, s := range c.settings() {
		out[s.key] = s.env
	}
	return out
}

func set(f reflect.Value, val string) error {
	switch p := f.Addr().Interface().(type) {
	case *string:
		*p = val
	case *int:
		n, err := strconv.Atoi(val)
		if err != nil {
			return errors.New("not an integer")
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return errors.New("not true or false")
		}
		*p = b
	case *float64:
		n, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return errors.New("not a number")
		}
		*p = n
	case *[]string:
		*p = nil
		for _, part := range strings.Split(val, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	case *Duration:
		return p.UnmarshalText([]byte(val))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}

// Validate checks every value and names the first bad key and its value.
func (c *Config) Validate() error {
	bad := func(key string, val any, why string) error {
		return fmt.Errorf("invalid %s = %v: %s", key, val, why)
	}
	for _, a := range []struct{ key, val string }{{"http", c.HTTP}, {"gossip", c.Gossip}, {"peer", c.Peer}} {
		if _, _, err := net.SplitHostPort(a.val); err != nil {
			return bad(a.key, strconv.Quote(a.val), "want host:port")
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return bad("join", strconv.Quote(j), "want host:port")
		}
	}
	checks := []struct {
		ok  bool
		key string
		val any
		why string
	}{
		{c.Data != "", "data", `""`, "a data directory is required"},
		{c.BootstrapExpect >= 1, "bootstrap_expect", c.BootstrapExpect, "must be at least 1"},
		{oneOf(c.Log.Level, "debug", "info", "warn", "error"), "log.level", strconv.Quote(c.Log.Level), "want debug, info, warn or error"},
		{oneOf(c.Log.Format, "text", "json"), "log.format", strconv.Quote(c.Log.Format), "want text or json"},
		{oneOf(c.Auth.Registration, "open", "closed"), "auth.registration", strconv.Quote(c.Auth.Registration), "want open or closed"},
		{c.Auth.TokenTTL.Duration > 0, "auth.token_ttl", c.Auth.TokenTTL, "must be positive"},
		{c.Auth.BcryptCost >= 4 && c.Auth.BcryptCost <= 31, "auth.bcrypt_cost", c.Auth.BcryptCost, "must be 4-31"},
		{c.Auth.Secret == "" || len(c.Auth.Secret) >= 16, "auth.secret", "(hidden)", "must be at least 16 bytes"},
		{c.Process.TimerSlack.Duration >= 0 && c.Process.TimerSlack.Duration <= timerslack.Max, "process.timer_slack", c.Process.TimerSlack, "must be 0 (the kernel's default) to " + timerslack.Max.String()},
		{c.Process.IdleAfter.Duration == 0 || c.Process.IdleAfter.Duration >= time.Second, "process.idle_after", c.Process.IdleAfter, "must be 0 (never) or at least 1s"},
		{c.Cluster.Shards >= 1 && c.Cluster.Shards <= 1024, "cluster.shards", c.Cluster.Shards, "must be 1-1024"},
		{c.Cluster.HeartbeatTimeout.Duration >= 10*time.Millisecond, "cluster.heartbeat_timeout", c.Cluster.HeartbeatTimeout, "must be at least 10ms"},
		{c.Cluster.ElectionTimeout.Duration >= c.Cluster.HeartbeatTimeout.Duration, "cluster.election_timeout", c.Cluster.ElectionTimeout, "must be at least heartbeat_timeout"},
		{c.Cluster.CommitTimeout.Duration > 0, "cluster.commit_timeout", c.Cluster.CommitTimeout, "must be positive"},
		{c.Cluster.MaxBatch >= 1, "cluster.max_batch", c.Cluster.MaxBatch, "must be at least 1 (1 turns batching off)"},
		{c.Cluster.Inflight >= 1, "cluster.inflight", c.Cluster.Inflight, "must be at least 1"},
		{c.Cluster.Replicas >= 1 && c.Cluster.Replicas <= 7, "cluster.replicas", c.Cluster.Replicas, "must be 1-7"},
		{c.Cluster.Grace.Duration >= 0, "cluster.grace", c.Cluster.Grace, "must not be negative"},
		{c.Cluster.SnapshotThreshold >= 1, "cluster.snapshot_threshold", c.Cluster.SnapshotThreshold, "must be at least 1"},
		{c.Cluster.TrailingLogs >= 1, "cluster.trailing_logs", c.Cluster.TrailingLogs, "must be at least 1"},
		{c.Cluster.SnapshotInterval.Duration >= 5*time.Millisecond, "cluster.snapshot_interval", c.Cluster.SnapshotInterval, "must be at least 5ms"},
		{c.Webhook.URL == "" || strings.HasPrefix(c.Webhook.URL, "http://") || strings.HasPrefix(c.Webhook.URL, "https://"), "webhook.url", strconv.Quote(c.Webhook.URL), "want an http:// or https:// URL"},
		{c.Webhook.Timeout.Duration > 0, "webhook.timeout", c.Webhook.Timeout, "must be positive"},
		{c.Store.CacheMB >= 8 && c.Store.CacheMB <= 1<<20, "store.cache_mb", c.Store.CacheMB, "must be 8-1048576"},
		{validGossipKey(c.Cluster.GossipKey), "cluster.gossip_key", "(hidden)", "must be base64 of 16, 24 or 32 bytes"},
		{c.Limits.MaxBody >= 1 && c.Limits.MaxBody <= 1<<20, "limits.max_body", c.Limits.MaxBody, "must be 1-1048576"},
		{c.Limits.MaxFrame >= c.Limits.MaxBody+1024, "limits.max_frame", c.Limits.MaxFrame, "must exceed max_body by at least 1024"},
		{c.Limits.MaxFrame >= minFrameForGroup(c.Limits.MaxGroup), "limits.max_frame", c.Limits.MaxFrame,
			fmt.Sprintf("must hold a create_group of max_group members: at least %d for max_group %d", minFrameForGroup(c.Limits.MaxGroup), c.Limits.MaxGroup)},
		{c.Limits.MaxGroup >= 2, "limits.max_group", c.Limits.MaxGroup, "must be at least 2"},
		{c.Limits.Rate > 0, "limits.rate", c.Limits.Rate, "must be positive"},
		{c.Limits.Burst >= 1, "limits.burst", c.Limits.Burst, "must be at least 1"},
		{c.Limits.SessionsPerUser >= 1, "limits.sessions_per_user", c.Limits.SessionsPerUser, "must be at least 1"},
		{c.Limits.SendQueue >= 8, "limits.send_queue", c.Limits.SendQueue, "must be at least 8"},
		{c.Limits.HelloTimeout.Duration > 0, "limits.hello_timeout", c.Limits.HelloTimeout, "must be positive"},
		{c.Limits.IdleTimeout.Duration >= 30*time.Millisecond, "limits.idle_timeout", c.Limits.IdleTimeout, "must be at least 30ms"},
		{c.Limits.WriteTimeout.Duration >= 10*time.Millisecond, "limits.write_timeout", c.Limits.WriteTimeout, "must be at least 10ms"},
	}
	for _, ch := range checks {
		if !ch.ok {
			return bad(ch.key, ch.val, ch.why)
		}
	}
	return nil
}

// GossipKeyBytes decodes cluster.gossip_key; nil when none is set.
func (c *Config) GossipKeyBytes() []byte {
	b, _ := base64.StdEncoding.DecodeString(c.Cluster.GossipKey)
	if len(b) == 0 {
		return nil
	}
	return b
}

func validGossipKey(k string) bool {
	if k == "" {
		return true
	}
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && (len(b) == 16 || len(b) == 24 || len(b) == 32)
}

func oneOf(v string, options ...string) bool {
	for _, o := range options {
		if v == o {
			return true
		}
	}
	return false
}

// Load builds the configuration of `parley serve`: defaults, the file (if
// any), the environment, then the flags already parsed into flags (TOML key
// -> value, only those given on the command line).
func Load(file string, lookup func(string) (string, bool), flags map[string]string) (Config, error) {
	c := Default()
	if f, ok := lookup("PARLEY_CONFIG"); ok && file == "" {
		file = f
	}
	if file != "" {
		if err := c.LoadFile(file); err != nil {
			return c, err
		}
	}
	if err := c.LoadEnv(lookup); err != nil {
		return c, err
	}
	for key, val := range flags {
		if err := c.Set(key, val); err != nil {
			return c, fmt.Errorf("flag %w", err)
		}
	}
	return c, c.Validate()
}

// minFrameForGroup is the smallest max_frame that carries a create_group
// or add_members frame naming maxGroup users of the longest id (32
// characters, 35 bytes with quotes and comma), plus 1 KiB for the rest of
// the frame. Below it, a client could not make a group as large as the
// protocol allows in one request: the frame would close its session.
func minFrameForGroup(maxGroup int) int { return maxGroup*35 + 1024 }
