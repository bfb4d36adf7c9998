package redisconn

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
)

// The look go-redis makes at a pooled connection is skipped only right
// after a read from the server, and made again once that is past.
func TestPeekSkippedOnlyRightAfterARead(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	plain, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	defer server.Close()
	c := wrapForPeek(plain)
	defer c.Close()
	looks := func() int {
		t.Helper()
		rc, err := c.(*recentConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := rc.Read(func(uintptr) bool { n++; return true }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := looks(); n != 1 {
		t.Fatalf("a connection that never read: %d looks, want 1", n)
	}
	if _, err := server.Write([]byte("+OK\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if n := looks(); n != 0 {
		t.Fatalf("right after a read: %d looks, want 0", n)
	}
	time.Sleep(peekSkipWindow + 20*time.Millisecond)
	if n := looks(); n != 1 {
		t.Fatalf("%s after a read: %d looks, want 1", peekSkipWindow+20*time.Millisecond, n)
	}
	// TLS connections are not a syscall.Conn; go-redis makes no look at
	// them, and the wrapper leaves them as they are.
	tc := tls.Client(server, &tls.Config{})
	if got := wrapForPeek(tc); got != net.Conn(tc) {
		t.Fatalf("a TLS connection was wrapped: %T", got)
	}
}

// Connections the pool held when Redis went away and came back are still
// looked at, so no command fails on one once the server is back.
func TestCommandsAfterARestart(t *testing.T) {
	t.Parallel()
	r := harness.Redis(t)
	c, _, err := Open(Options{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	// Many connections in the pool, each having just read.
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := c.Incr(ctx, "n").Err(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if err := c.Incr(ctx, "n").Err(); err != nil {
			t.Fatalf("command %d after the restart: %v", i, err)
		}
	}
}
