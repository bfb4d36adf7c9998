package harness

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatal records the message and ends
// the goroutine, as testing.T's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatal(args ...any) {
	f.msg = args[0].(string)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, 5*time.Second, "the third call", func() bool { calls++; return calls == 3 }, nil)
	if calls != 3 {
		t.Fatalf("ok called %d times, want 3", calls)
	}

	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		Eventually(f, 100*time.Millisecond, "never", func() bool { return false }, func() string { return "the detail" })
	}()
	<-done
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", took)
	}
	if !strings.Contains(f.msg, "waiting for never") || !strings.HasSuffix(f.msg, "; the detail") {
		t.Fatalf("failure message %q", f.msg)
	}
}
