package conn

import (
	"fmt"
	"slices"
	"testing"
)

func TestDirectoryApply(t *testing.T) {
	d := &directory{byNode: map[string]map[string]struct{}{}}
	check := func(what string, got, want []string) {
		t.Helper()
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: changed %v, want %v", what, got, want)
		}
	}
	check("first full list", d.apply("n2", directoryMsg{Full: true, Online: []string{"a", "b", "c"}}), []string{"a", "b", "c"})
	check("delta", d.apply("n2", directoryMsg{Online: []string{"d", "a"}, Offline: []string{"b"}}), []string{"b", "d"})
	// A full list replaces the node's set: users missing from it went
	// offline, new ones came, the rest did not change.
	check("full list", d.apply("n2", directoryMsg{Full: true, Online: []string{"a", "c", "e"}}), []string{"d", "e"})
	check("other node", d.apply("n3", directoryMsg{Online: []string{"a"}}), []string{"a"})
	if got := d.nodesOf([]string{"a", "b", "c", "d", "e"}); len(got["n2"]) != 3 || len(got["n3"]) != 1 {
		t.Fatalf("nodesOf = %v, want n2: a c e, n3: a", got)
	}
}

// A node holding many users sends its full list every few seconds: applying
// it must not be quadratic in their number.
func BenchmarkDirectoryFullList(b *testing.B) {
	users := make([]string, 20000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	d := &directory{byNode: map[string]map[string]struct{}{}}
	d.apply("n2", directoryMsg{Full: true, Online: users})
	for b.Loop() {
		d.apply("n2", directoryMsg{Full: true, Online: users})
	}
}
