package idleprocs

import "os"

// envSet reports whether GOMAXPROCS was set in the environment: then the
// number it gave is the one to restore, not the runtime's default.
func envSet() bool {
	_, ok := os.LookupEnv("GOMAXPROCS")
	return ok
}
