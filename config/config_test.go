package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestExampleDocumentsEveryKey(t *testing.T) {
	c := Default()
	md, err := toml.DecodeFile("../config.example.toml", &c)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("config.example.toml has keys Config lacks: %v", und)
	}
	for key := range c.EnvNames() {
		parts := strings.Split(key, ".")
		if !md.IsDefined(parts...) {
			t.Errorf("config.example.toml does not document %s", key)
		}
	}
	// The example's values are the defaults.
	if d := Default(); c.Cluster != d.Cluster || c.Limits != d.Limits || c.Auth != d.Auth || c.Log != d.Log || c.HTTP != d.HTTP || c.Store != d.Store || c.Debug != d.Debug {
		t.Errorf("config.example.toml differs from Default():\n%+v\n%+v", c, d)
	}
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.toml")
	os.WriteFile(file, []byte("http = \"127.0.0.1:1\"\nnode = \"from-file\"\n[cluster]\nshards = 16\n[auth]\nsecret = \"file-secret-0123456789\"\n"), 0o600)
	env := map[string]string{"PARLEY_NODE": "from-env", "PARLEY_CLUSTER_SHARDS": "32", "PARLEY_BOOTSTRAP_EXPECT": "1",
		"PARLEY_JOIN": "a:1, b:2", "PARLEY_CLUSTER_COMMIT_TIMEOUT": "250ms", "PARLEY_DEBUG_CONTENTION_PROFILES": "true",
		"PARLEY_STORE_CACHE_MB": "64"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := Load(file, lookup, map[string]string{"node": "from-flag"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "from-flag" || c.Cluster.Shards != 32 || c.HTTP != "127.0.0.1:1" || c.Auth.Secret != "file-secret-0123456789" {
		t.Fatalf("precedence: %+v", c)
	}
	if len(c.Join) != 2 || c.Join[1] != "b:2" || c.Cluster.CommitTimeout.Duration != 250*time.Millisecond {
		t.Fatalf("lists and durations from env: %v %v", c.Join, c.Cluster.CommitTimeout)
	}
	if !c.Debug.ContentionProfiles || c.Store.CacheMB != 64 {
		t.Fatalf("booleans and section ints from env: %+v %+v", c.Debug, c.Store)
	}
	if c.Data != "./parley-data" {
		t.Fatalf("default data dir %q", c.Data)
	}
}

func TestErrorsNameKeyAndValue(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("c%d.toml", n))
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	none := func(string) (string, bool) { return "", false }
	cases := []struct {
		name, file string
		env        map[string]string
		flags      map[string]string
		want       []string
	}{
		{"unknown top key", write("colour = \"blue\"\n"), nil, nil, []string{"unknown key", "colour"}},
		{"unknown section key", write("[cluster]\nshard = 4\n"), nil, nil, []string{"unknown key", "cluster.shard"}},
		{"bad value", write("[cluster]\nshards = 0\n"), nil, nil, []string{"cluster.shards", "0"}},
		{"wrong type", write("[cluster]\nshards = \"many\"\n"), nil, nil, []string{"shards"}},
		{"bad enum", write("[log]\nformat = \"xml\"\n"), nil, nil, []string{"log.format", "xml"}},
		{"bad env", "", map[string]string{"PARLEY_BOOTSTRAP_EXPECT": "three"}, nil, []string{"PARLEY_BOOTSTRAP_EXPECT", "three"}},
		{"bad duration", "", map[string]string{"PARLEY_CLUSTER_COMMIT_TIMEOUT": "soon"}, nil, []string{"PARLEY_CLUSTER_COMMIT_TIMEOUT", "soon"}},
		{"bad address flag", "", nil, map[string]string{"http": "localhost"}, []string{"http", "localhost"}},
		{"short secret", "", map[string]string{"PARLEY_AUTH_SECRET": "tinysecret"}, nil, []string{"auth.secret"}},
		{"tiny cache", "", map[string]string{"PARLEY_STORE_CACHE_MB": "1"}, nil, []string{"store.cache_mb", "1"}},
		{"huge timer slack", "", map[string]string{"PARLEY_PROCESS_TIMER_SLACK": "1s"}, nil, []string{"process.timer_slack", "1s", "20ms"}},
		{"frame too small for a full group", write("[limits]\nmax_frame = 65536\n"), nil, nil, []string{"limits.max_frame", "65536", "create_group", "176024"}},
		{"bad bool", "", map[string]string{"PARLEY_DEBUG_CONTENTION_PROFILES": "maybe"}, nil, []string{"PARLEY_DEBUG_CONTENTION_PROFILES", "maybe"}},
		{"no snapshot threshold", write("[cluster]\nsnapshot_threshold = 0\n"), nil, nil, []string{"cluster.snapshot_threshold", "0"}},
		{"no trailing logs", "", map[string]string{"PARLEY_CLUSTER_TRAILING_LOGS": "0"}, nil, []string{"cluster.trailing_logs", "0"}},
		{"snapshot checks too often", "", map[string]string{"PARLEY_CLUSTER_SNAPSHOT_INTERVAL": "1ms"}, nil, []string{"cluster.snapshot_interval", "1ms", "5ms"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lookup := none
			if c.env != nil {
				lookup = func(k string) (string, bool) { v, ok := c.env[k]; return v, ok }
			}
			_, err := Load(c.file, lookup, c.flags)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	_, err := Load("", func(k string) (string, bool) { return "tinysecret", k == "PARLEY_AUTH_SECRET" }, nil)
	if err == nil || strings.Contains(err.Error(), "tinysecret") {
		t.Errorf("error %v shows the secret", err)
	}
}
