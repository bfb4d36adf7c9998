// Package localsvc runs the real servers dab needs on one machine, as child
// processes on loopback ports with their data in a folder of their own:
// redis-server and versitygw (an S3-compatible gateway). `dab dev` uses it for
// its embedded default and the test harness for every integration test, so
// both exercise the same real parts.
package localsvc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled means a server binary was not found.
var ErrNotInstalled = errors.New("server binary not installed")

// Install hints, shown when a binary is missing.
const (
	RedisInstallHint     = "install it with `apt-get install -y redis-server` (or run `make test`, which installs what is missing)"
	VersitygwInstallHint = "install it with `go install github.com/versity/versitygw/cmd/versitygw@v1.8.0` (or run `make test`, which installs what is missing)"
)

// FindBinary looks for name on PATH and in Go's bin folder (where `go install` puts it).
func FindBinary(name, hint string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if gb := os.Getenv("GOBIN"); gb != "" {
		dirs = append(dirs, gb)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, d := range filepath.SplitList(gp) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found on PATH or in %s: %s", ErrNotInstalled, name, strings.Join(dirs, ", "), hint)
}

// ErrPortTaken: the server could not bind its port, which another process
// holds (or took after FreePort found it free). Callers that asked for a
// port of their own may start again on another.
var ErrPortTaken = errors.New("its port was taken by another process")

// onFreePort starts a server on port or, when port is 0, on a free port,
// choosing another when a process takes the chosen one before the server
// binds it (FreePort only finds a port free at the time it asks).
func onFreePort(port int, start func(port int) error) error {
	auto := port == 0
	for attempt := 1; ; attempt++ {
		if auto {
			p, err := FreePort()
			if err != nil {
				return err
			}
			port = p
		}
		err := start(port)
		if err == nil || !auto || attempt == 5 || !errors.Is(err, ErrPortTaken) {
			return err
		}
	}
}

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localsvc: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is one child server that can be stopped and started again on the
// same port with the same data.
type process struct {
	name  string
	bin   string
	args  []string
	env   []string // added to the parent's environment
	port  int
	log   string
	ready func(addr string) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("localsvc: %s already running", p.name)
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("localsvc: %s log: %w", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	// The server dies with its parent, even when the parent is SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("localsvc: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			p.cmd = nil
			log := tail(p.log)
			if strings.Contains(strings.ToLower(log), "address already in use") {
				return fmt.Errorf("localsvc: %s exited at start: %w: %s", p.name, ErrPortTaken, log)
			}
			return fmt.Errorf("localsvc: %s exited at start: %s", p.name, log)
		default:
		}
		err := p.ready(p.addr())
		if err == nil {
			// The answer may come from another server that took the port
			// first (two tests picked the same free port): ours then exits,
			// and a test that went on would share the other's data.
			owned, known := listening(cmd.Process.Pid, p.port)
			if owned || !known {
				return nil
			}
			err = fmt.Errorf("another process answers on port %d", p.port)
		}
		if time.Now().After(deadline) {
			p.stopLocked()
			return fmt.Errorf("localsvc: %s not ready on %s after 20s: %v; log: %s", p.name, p.addr(), err, tail(p.log))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the server gracefully (SIGTERM, then SIGKILL after 10s).
func (p *process) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked()
}

func (p *process) stopLocked() error {
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	return nil
}

// Kill ends the server at once, as a crash would.
func (p *process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// Restart stops the server and starts it again on the same port and data.
func (p *process) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.start()
}

// Exited is closed when the server started last exits, whatever the
// cause (closed already when none runs).
func (p *process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// Revive starts the server again after it exited by itself (a crash, the
// OOM killer), on the same port with the same data.
func (p *process) Revive() error {
	p.mu.Lock()
	if p.cmd != nil {
		select {
		case <-p.done:
			p.cmd = nil
		default:
			p.mu.Unlock()
			return fmt.Errorf("localsvc: %s is running", p.name)
		}
	}
	p.mu.Unlock()
	return p.start()
}

// LogTail is the end of the server's log, for error messages.
func (p *process) LogTail() string { return tail(p.log) }

// Running reports whether the child process is alive.
func (p *process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// tail returns the end of a log file for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	if s == "" {
		return "(empty log at " + path + ")"
	}
	return s
}

func dialReady(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// redisReady waits for PONG: a Redis loading its AOF accepts connections
// but answers LOADING.
func redisReady(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// A server that wants a password answers, and is up.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("redis answered %q", strings.TrimSpace(line))
	}
	return nil
}
