package localsvc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestFindBinaryNamesTheFix(t *testing.T) {
	t.Parallel()
	_, err := FindBinary("dab-no-such-server", VersitygwInstallHint)
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "go install github.com/versity/versitygw") {
		t.Fatalf("err = %v", err)
	}
}

// redisDo sends one command and returns the first reply line.
func redisDo(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	args := strings.Fields(cmd)
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func TestRedisKillAndRestartKeepsData(t *testing.T) {
	t.Parallel()
	r, err := StartRedis(RedisOptions{Dir: t.TempDir(), AOF: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	if got := redisDo(t, r.Addr(), "SET k v"); got != "+OK" {
		t.Fatalf("SET = %q", got)
	}
	redisDo(t, r.Addr(), "BGREWRITEAOF")
	time.Sleep(1500 * time.Millisecond) // appendfsync everysec
	r.Kill()
	if r.Running() {
		t.Fatal("still running after Kill")
	}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	if got := redisDo(t, r.Addr(), "GET k"); got != "$1" {
		t.Fatalf("after restart GET = %q, want the value back", got)
	}
	if err := r.Restart(); err != nil || !r.Running() {
		t.Fatalf("Restart = %v, running %v", err, r.Running())
	}
}

func TestStandInsServe(t *testing.T) {
	t.Parallel()
	er, err := StartEmbeddedRedis(0, "pw-of-the-stand-in")
	if err != nil {
		t.Fatal(err)
	}
	defer er.Stop()
	u, err := url.Parse(er.URL())
	if err != nil {
		t.Fatal(err)
	}
	if pw, _ := u.User.Password(); pw != "pw-of-the-stand-in" {
		t.Fatalf("URL %s lacks the password", er.URL())
	}
	if got := redisDo(t, u.Host, "PING"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("PING without the password = %q", got)
	}
	es, err := StartEmbeddedS3(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	if err := dialReady(strings.TrimPrefix(es.Endpoint(), "http://")); err != nil {
		t.Fatal(err)
	}
}

// fakeRedis answers +PONG to every connection on a loopback port, as
// another test's Redis on the same port would.
func fakeRedis(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("+PONG\r\n"))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestStartRefusesAPortAnotherServerHolds: a server whose port another
// server holds is not taken for ready because the other one answers (two
// tests that picked the same free port would share one Redis): the start
// fails, and says the port was taken.
func TestStartRefusesAPortAnotherServerHolds(t *testing.T) {
	t.Parallel()
	if _, err := FindBinary("redis-server", RedisInstallHint); err != nil {
		t.Fatal(err)
	}
	port := fakeRedis(t)
	r, err := StartRedis(RedisOptions{Dir: t.TempDir(), Port: port})
	if err == nil {
		r.Stop()
		t.Fatalf("redis-server started on port %d, which another server holds", port)
	}
	if !errors.Is(err, ErrPortTaken) {
		t.Fatalf("err = %v, want ErrPortTaken", err)
	}
}

// TestOnFreePortChoosesAgain: a port taken before the server binds it is
// chosen again, when dab chose it; a port the caller named is not.
func TestOnFreePortChoosesAgain(t *testing.T) {
	t.Parallel()
	var tried []int
	err := onFreePort(0, func(port int) error {
		if tried = append(tried, port); len(tried) < 3 {
			return fmt.Errorf("wrapped: %w", ErrPortTaken)
		}
		return nil
	})
	if err != nil || len(tried) != 3 || tried[0] == 0 {
		t.Fatalf("auto port: %v after %v", err, tried)
	}
	tried = nil
	err = onFreePort(4242, func(port int) error { tried = append(tried, port); return ErrPortTaken })
	if !errors.Is(err, ErrPortTaken) || len(tried) != 1 || tried[0] != 4242 {
		t.Fatalf("named port: %v after %v", err, tried)
	}
	tried = nil
	err = onFreePort(0, func(port int) error { tried = append(tried, port); return ErrPortTaken })
	if !errors.Is(err, ErrPortTaken) || len(tried) != 5 {
		t.Fatalf("always taken: %v after %d tries", err, len(tried))
	}
}

// TestListening: who holds a listening socket, from /proc.
func TestListening(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if owned, known := listening(os.Getpid(), port); !owned || !known {
		t.Fatalf("this process's listener on %d: owned %v known %v", port, owned, known)
	}
	free, _ := FreePort()
	if owned, known := listening(os.Getpid(), free); owned || !known {
		t.Fatalf("a free port %d: owned %v known %v", free, owned, known)
	}
}

// TestListeningOfAnExitedProcess: a process that is gone holds nothing
// (a server that lost its port exits while another answers on it).
func TestListeningOfAnExitedProcess(t *testing.T) {
	t.Parallel()
	port := fakeRedis(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if owned, known := listening(cmd.Process.Pid, port); owned || !known {
		t.Fatalf("an exited process: owned %v known %v", owned, known)
	}
}

// TestRedisPasswordIsLettersAndDigits: the password goes into a config file
// as it is, so anything that could end its line or its quotes is refused.
func TestRedisPasswordIsLettersAndDigits(t *testing.T) {
	t.Parallel()
	for _, pw := range []string{"pw\"\nrename-command CONFIG \"\"", "pw with space", "pw\\"} {
		if _, err := newRedis("redis-server", 6379, "no", RedisOptions{Dir: t.TempDir(), Password: pw}); err == nil {
			t.Errorf("password %q accepted", pw)
		}
	}
	if _, err := newRedis("redis-server", 6379, "no", RedisOptions{Dir: t.TempDir(), Password: "0123abcdefXYZ"}); err != nil {
		t.Fatal(err)
	}
}
