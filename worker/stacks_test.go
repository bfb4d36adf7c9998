package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
)

// goroutineID is the number runtime.Stack prints for the calling goroutine.
func goroutineID() string {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	return string(bytes.Fields(b)[1])
}

// TestStacksKeepTheirGoroutines: handlers run on a goroutine other than
// the caller's, and one after the other on the same one.
func TestStacksKeepTheirGoroutines(t *testing.T) {
	t.Parallel()
	s := newStacks()
	caller := goroutineID()
	ran := map[string]int{}
	for range 10 {
		s.do(func() { ran[goroutineID()]++ })
	}
	if len(ran) != 1 || ran[caller] != 0 {
		t.Fatalf("ran on goroutines %v (caller %s); want all 10 on one kept goroutine", ran, caller)
	}
}

// TestStacksRunAtOnce: as many handlers run at once as callers call; none
// waits for another's goroutine.
func TestStacksRunAtOnce(t *testing.T) {
	t.Parallel()
	s := newStacks()
	const n = 20
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	var done sync.WaitGroup
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			s.do(func() { started.Done(); release.Wait() })
		}()
	}
	started.Wait() // all n running at once, or this never returns
	release.Done()
	done.Wait()
}

// TestStacksCarryPanicsToAsynq: a handler's panic reaches asynq in the
// task's goroutine, so asynq recovers it as for any handler and the task
// fails with the panic's value and where it happened; the kept goroutine
// lives on.
func TestStacksCarryPanicsToAsynq(t *testing.T) {
	t.Parallel()
	s := newStacks()
	h := s.wrap(func(context.Context, *asynq.Task) error { panic("boom in the handler") })
	func() {
		defer func() {
			v := recover()
			p, ok := v.(handlerPanic)
			if !ok || p.value != "boom in the handler" || !strings.Contains(fmt.Sprint(v), "stacks_test.go") {
				t.Fatalf("recovered %v; want the handler's panic with its stack", v)
			}
		}()
		h(context.Background(), asynq.NewTask("x", nil))
	}()
	// runtime.Goexit (t.FailNow in a handler under test) fails the task
	// instead of leaving its caller waiting.
	h = s.wrap(func(context.Context, *asynq.Task) error { runtime.Goexit(); return nil })
	func() {
		defer func() {
			if v := recover(); !strings.Contains(fmt.Sprint(v), "runtime.Goexit") {
				t.Fatalf("recovered %v; want the Goexit reported", v)
			}
		}()
		h(context.Background(), asynq.NewTask("x", nil))
	}()
	errBad := errors.New("bad")
	h = s.wrap(func(context.Context, *asynq.Task) error { return errBad })
	if err := h(context.Background(), asynq.NewTask("x", nil)); !errors.Is(err, errBad) {
		t.Fatalf("err = %v, want the handler's", err)
	}
}
