package netguard

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestGuardNeverDialsLoopbackWhateverTheSpelling: every spelling of a
// loopback address (decimal, hex, octal and short IPv4 forms, IPv4-mapped,
// NAT64 and 6to4 IPv6 forms, trailing dots, upper case, zones) is refused
// or fails to resolve: a listener on loopback sees no connection.
func TestGuardNeverDialsLoopbackWhateverTheSpelling(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "[::]:0") // dual stack: IPv4 and IPv6 loopback
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan string, 64) // remote addresses, in the order accepted
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	cl := New(Options{Timeout: 2 * time.Second, AllowPrivate: []string{"cdn.example.org"}}).Client()
	for _, host := range []string{
		"127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "017700000001",
		"localhost", "LOCALHOST", "localhost.", "0.0.0.0", "0",
		"[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
		"[::127.0.0.1]", "[::]", "[fe80::1%25lo]",
	} {
		u := "https://" + host + ":" + port + "/x"
		resp, err := cl.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: fetched", u)
			continue
		}
		if !strings.Contains(err.Error(), "address refused") && !strings.Contains(err.Error(), "resolve") && !strings.Contains(err.Error(), "invalid") {
			t.Errorf("%s: %v, want refused", u, err)
		}
	}
	// A connection of the test's own, made last: the listener accepts in
	// order, so any connection the guard let through is accepted before it.
	m, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	marker := m.LocalAddr().String()
	for {
		select {
		case a := <-accepted:
			if a == marker {
				return
			}
			t.Errorf("a connection from %s reached the loopback listener", a)
		case <-time.After(10 * time.Second):
			t.Fatal("the listener never accepted the test's own connection")
		}
	}
}
