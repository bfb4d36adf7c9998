package worker

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// stackIdleMax is how long a handler goroutine waits for its next task
// before it ends.
const stackIdleMax = 30 * time.Second

// stacks runs task handlers on goroutines that outlive their task. asynq
// starts a new goroutine for every task, and an upload's handler (the
// spool, Redis scripts, the S3 client: the SDK's middleware chain is deep)
// grows that goroutine's stack from its first few KiB several times over,
// copying it each time: 6 to 9% of the worker's CPU in a burst of small
// files (perf, P1a). A goroutine kept for the
// next task keeps its grown stack. There are never more of them than tasks
// running at once (Config.Concurrency); one idle for stackIdleMax ends.
type stacks struct {
	mu sync.Mutex
	// idle are the kept goroutines waiting for a call, the last to finish
	// at the end (its stack is the likeliest to be warm).
	idle []chan *stackCall
}

type stackCall struct {
	run  func()
	done chan struct{}
	// panicked is what run panicked with, re-raised in the caller's
	// goroutine so that asynq recovers it as it recovers any handler's.
	panicked any
}

// handlerPanic is a handler's panic carried to asynq's goroutine, with the
// stack of the goroutine it happened on.
type handlerPanic struct {
	value any
	stack []byte
}

func (p handlerPanic) String() string { return fmt.Sprintf("%v\n%s", p.value, p.stack) }

func newStacks() *stacks { return &stacks{} }

// wrap returns h run on one of the kept goroutines.
func (s *stacks) wrap(h asynq.HandlerFunc) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		var err error
		s.do(func() { err = h(ctx, t) })
		return err
	}
}

// do runs fn on an idle kept goroutine, or on a new one that is kept after,
// and returns when fn has returned.
func (s *stacks) do(fn func()) {
	c := &stackCall{done: make(chan struct{})}
	c.run = func() {
		returned := false
		defer func() {
			if v := recover(); v != nil {
				c.panicked = handlerPanic{value: v, stack: debug.Stack()}
			} else if !returned {
				// runtime.Goexit ends this goroutine before keep can say the
				// call is done: say it here, as a failure of the task.
				c.panicked = handlerPanic{value: "the task handler called runtime.Goexit", stack: debug.Stack()}
				close(c.done)
			}
		}()
		fn()
		returned = true
	}
	s.mu.Lock()
	if n := len(s.idle); n > 0 {
		next := s.idle[n-1]
		s.idle = s.idle[:n-1]
		s.mu.Unlock()
		next <- c // buffered: never blocks
	} else {
		s.mu.Unlock()
		go s.keep(c)
	}
	<-c.done
	if c.panicked != nil {
		panic(c.panicked)
	}
}

// keep runs c, then the calls that come while it is idle, until none has
// come for stackIdleMax. It is idle before it says c is done, so a caller
// that calls again at once finds it.
func (s *stacks) keep(c *stackCall) {
	calls := make(chan *stackCall, 1)
	idle := time.NewTimer(stackIdleMax)
	defer idle.Stop()
	for {
		c.run()
		idle.Reset(stackIdleMax)
		s.mu.Lock()
		s.idle = append(s.idle, calls)
		s.mu.Unlock()
		close(c.done)
		select {
		case c = <-calls:
		case <-idle.C:
			if s.retire(calls) {
				return
			}
			c = <-calls // taken while the timer fired: its call is on the way
		}
	}
}

// retire takes calls off the idle list; false when a caller took it first.
func (s *stacks) retire(calls chan *stackCall) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, ch := range s.idle {
		if ch == calls {
			s.idle = append(s.idle[:i], s.idle[i+1:]...)
			return true
		}
	}
	return false
}
