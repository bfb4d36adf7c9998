package storygraph

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestTmpdirRestored: once go-graphviz is initialized (its cache in the
// user's own folder, see wasmcache), the process has TMPDIR back as it
// started with it.
func TestTmpdirRestored(t *testing.T) {
	environ, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		t.Fatal(err)
	}
	start, set := "", false
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "TMPDIR="); ok {
			start, set = v, true
		}
	}
	now, ok := os.LookupEnv("TMPDIR")
	if now != start || ok != set {
		t.Fatalf("TMPDIR is %q (set %v), the process started with %q (set %v)", now, ok, start, set)
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DAB_GRAPHVIZ_") {
			t.Fatalf("%s left in the environment", kv)
		}
	}
}
