package redisconn

// go-redis looks at a pooled connection each time it takes one: a
// recvfrom(MSG_PEEK) that tells a connection the server closed (or one
// holding unexpected bytes) from a usable one. That is one system call per
// command, a quarter of the system calls an upload or a purchase makes to
// Redis (each command is otherwise a write and a read), on a machine where
// a system call is dear. A connection that read a reply a moment ago is
// not worth the look: what the look finds there (the server gone) the
// command finds too, and go-redis retries a command whose connection fails
// before it is answered. So the look is skipped for a connection that
// read from the server within peekSkipWindow, and made as before for one
// that did not, such as every connection still in the pool when a server
// comes back after a restart, which takes longer than the window.
//
// go-redis makes the look only on connections that are a syscall.Conn (it
// skips it for TLS); the wrapper keeps that: it wraps only those, and
// answers the look through the connection's own RawConn when it is due.

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// peekSkipWindow is how long after a read from the server go-redis's look
// at the connection is skipped.
const peekSkipWindow = 100 * time.Millisecond

// peekHook wraps every connection its client dials.
type peekHook struct{}

func (peekHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wrapForPeek(c), nil
	}
}

func (peekHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (peekHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// addPeekHook adds peekHook to c, or to each node client of a Cluster.
func addPeekHook(c redis.UniversalClient) {
	switch c := c.(type) {
	case *redis.Client:
		c.AddHook(peekHook{})
	case *redis.ClusterClient:
		c.OnNewNode(func(node *redis.Client) { node.AddHook(peekHook{}) })
	}
}

func wrapForPeek(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c // TLS: go-redis makes no look
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &recentConn{Conn: c, raw: raw, born: time.Now()}
}

// recentConn is a connection that knows when it last read from the server.
type recentConn struct {
	net.Conn
	raw syscall.RawConn
	// born is when the connection was made; times count from it (on the
	// monotonic clock).
	born time.Time
	// lastRead is when a read last returned bytes, in nanoseconds since
	// born (0: never).
	lastRead atomic.Int64
}

func (c *recentConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(int64(time.Since(c.born)))
	}
	return n, err
}

// SyscallConn is what go-redis's look goes through.
func (c *recentConn) SyscallConn() (syscall.RawConn, error) { return lookIfDue{c}, nil }

// lookIfDue runs go-redis's look (Read) only when the connection read
// nothing from the server within peekSkipWindow.
type lookIfDue struct{ c *recentConn }

func (l lookIfDue) Read(f func(fd uintptr) bool) error {
	if last := l.c.lastRead.Load(); last != 0 && int64(time.Since(l.c.born))-last < int64(peekSkipWindow) {
		return nil
	}
	return l.c.raw.Read(f)
}

func (l lookIfDue) Write(f func(fd uintptr) bool) error { return l.c.raw.Write(f) }

func (l lookIfDue) Control(f func(fd uintptr)) error { return l.c.raw.Control(f) }
