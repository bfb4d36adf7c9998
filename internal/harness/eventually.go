package harness

import (
	"fmt"
	"testing"
	"time"
)

// Eventually polls ok until it returns true. After timeout it fails t,
// naming what it waited for and adding detail(), when detail is not nil
// (what the failure needs to be understood: a log tail, a queue's state).
//
// ok runs on the test's goroutine, so it may fail t itself (a process that
// exited, say). It is polled every 5 ms at first, then every 50 ms.
//
// Use it for "something happens"; for "nothing happens", wait for a later
// event that proves it, never for a fixed time.
func Eventually(t testing.TB, timeout time.Duration, what string, ok func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := 5 * time.Millisecond; !ok(); wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %s waiting for %s", timeout, what)
			if detail != nil {
				msg += "; " + detail()
			}
			t.Fatal(msg)
		}
		time.Sleep(wait)
	}
}
