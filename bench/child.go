package main

// Child processes: dab's roles, `dab upload`, s5cmd and curl. Every one is
// stopped on every exit path (deferred stop, SIGKILL if the driver dies) and
// reports its peak RSS from getrusage once it has exited.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is one started process.
type child struct {
	name string
	cmd  *exec.Cmd
	// addr is a dab process's DAB_HTTP_ADDR.
	addr string

	ready   chan struct{} // closed when readyLine appeared on stderr
	done    chan struct{} // closed once the process has exited
	waitErr error         // cmd.Wait's result, set before done is closed
	tail    lineTail
	// errorLog counts dab's error lines and keeps the first, so a run
	// that succeeded only after retries says so under the table.
	errorLog errorLines
	stopped  sync.Once
}

// startChild starts cmd. If readyLine is not empty, waitReady waits for a
// stderr line containing it. stdout goes to cmd.Stdout (nil: discarded
// without a pipe); stderr is read line by line, its end kept for errors,
// and every line written to logFile when it is not empty (-logs).
func startChild(name string, cmd *exec.Cmd, readyLine, logFile string) (*child, error) {
	// The kernel kills the child if the driver dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	var log *os.File
	if logFile != "" {
		if log, err = os.Create(logFile); err != nil {
			return nil, fmt.Errorf("%s: -logs: %w", name, err)
		}
	}
	if err := cmd.Start(); err != nil {
		if log != nil {
			log.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signaled := false
		for sc.Scan() {
			line := sc.Text()
			if log != nil {
				fmt.Fprintln(log, line)
			}
			c.tail.add(line)
			if strings.Contains(line, `"level":"ERROR"`) {
				c.errorLog.add(line)
			}
			if !signaled && readyLine != "" && strings.Contains(line, readyLine) {
				close(c.ready)
				signaled = true
			}
		}
		// A line past the scanner's limit ends the scan: keep draining so
		// the child never blocks on a full pipe.
		io.Copy(io.Discard, stderr)
		if log != nil {
			log.Close()
		}
		c.waitErr = cmd.Wait() // only after every read, as StderrPipe requires
		close(c.done)
	}()
	return c, nil
}

// waitReady waits for the ready line, failing if the process exits first.
func (c *child) waitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-c.done:
		return fmt.Errorf("%s exited at start (%v): %s", c.name, c.waitErr, c.tail.String())
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("%s not ready after a minute: %s", c.name, c.tail.String())
	}
}

// wait waits for the process to exit on its own and returns its error.
func (c *child) wait(ctx context.Context) error {
	select {
	case <-c.done:
	case <-ctx.Done():
		c.stop()
		return ctx.Err()
	}
	if c.waitErr != nil {
		return fmt.Errorf("%s: %v: %s", c.name, c.waitErr, c.tail.String())
	}
	return nil
}

// exited is an error if the process has exited (a server must not).
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited early (%v): %s", c.name, c.waitErr, c.tail.String())
	default:
		return nil
	}
}

// stop ends the process (SIGINT: dab shuts down gracefully; SIGKILL after
// 30 s) and returns its peak RSS. Calling it again only returns the RSS.
func (c *child) stop() int64 {
	c.stopped.Do(func() {
		c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c.peakRSS()
}

// peakRSS is the exited process's high-water mark of resident memory, in
// bytes (0 while it runs).
func (c *child) peakRSS() int64 {
	select {
	case <-c.done:
	default:
		return 0
	}
	if ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10 // Linux reports KiB
	}
	return 0
}

// cpu is the CPU time (user + system) the exited process used, in seconds
// (0 while it runs).
func (c *child) cpu() float64 {
	select {
	case <-c.done:
	default:
		return 0
	}
	return (c.cmd.ProcessState.UserTime() + c.cmd.ProcessState.SystemTime()).Seconds()
}

// waitHTTP waits until a dab process's API answers /healthz: `dab watch`
// logs that its watcher started before its listener is necessarily up.
func (c *child) waitHTTP(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := c.exited(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no answer on http://%s/healthz after a minute", c.name, c.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// anyExited is the first early exit among servers, for the waits.
func anyExited(servers []*child) error {
	for _, s := range servers {
		if err := s.exited(); err != nil {
			return err
		}
	}
	return nil
}

// lineTail keeps the last lines of a stream for error messages.
type lineTail struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 5

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(line) > 500 {
		line = line[:500] + "..."
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[1:]
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(no output)"
	}
	return strings.Join(t.lines, " | ")
}

// errorLines counts error lines and keeps the first.
type errorLines struct {
	mu    sync.Mutex
	n     int
	first string
}

func (e *errorLines) add(line string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		e.first = line
		if len(e.first) > 300 {
			e.first = e.first[:300] + "..."
		}
	}
	e.n++
}

// summary is "" without errors, else how many and the first.
func (e *errorLines) summary() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		return ""
	}
	return fmt.Sprintf("%d error lines, the first: %s", e.n, e.first)
}
