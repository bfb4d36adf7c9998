package intake

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Upload bodies are read through bodyReader, which keeps a slow but steady
// client going and ends one that only holds a slot. Each MinRateWindow must
// bring at least MinRate bytes a second: the connection's read deadline is
// set to the end of the window until the window has its bytes, so a client
// that sends a byte now and then, or nothing at all, is stopped when the
// window closes, not an idle minute later. Once a window has its bytes, the
// deadline only keeps the client from going idle for IdleTimeout.

// MinRateWindowDefault is the span over which an upload's rate is judged.
const MinRateWindowDefault = 20 * time.Second

// rateCheck judges a transfer's rate window by window.
type rateCheck struct {
	min         int64 // bytes per second; 0 means no minimum
	window      time.Duration
	windowStart time.Time
	inWindow    int64
}

func (in *Intake) newRateCheck() *rateCheck {
	if in.cfg.MinRate <= 0 {
		return nil
	}
	return &rateCheck{min: in.cfg.MinRate, window: in.cfg.MinRateWindow, windowStart: time.Now()}
}

// need is how many bytes a window must bring.
func (c *rateCheck) need() int64 { return int64(float64(c.min) * c.window.Seconds()) }

// deadline is when the current window closes while it still lacks bytes
// (zero when it has them, or with no minimum).
func (c *rateCheck) deadline() time.Time {
	if c == nil || c.inWindow >= c.need() {
		return time.Time{}
	}
	return c.windowStart.Add(c.window)
}

// add counts n bytes read at now; it starts a new window once the current
// one is over, and says whether the window that closed fell short.
func (c *rateCheck) add(n int, now time.Time) (string, bool) {
	if c == nil {
		return "", true
	}
	c.inWindow += int64(n)
	if now.Before(c.windowStart.Add(c.window)) {
		return "", true
	}
	if c.inWindow < c.need() {
		return c.message(now), false
	}
	c.windowStart, c.inWindow = now, 0
	return "", true
}

func (c *rateCheck) message(now time.Time) string {
	elapsed := now.Sub(c.windowStart)
	return fmt.Sprintf("the upload brought %d bytes in %s, below the %d bytes/s this server requires (DAB_MIN_UPLOAD_RATE): it was stopped; send it again over a faster connection",
		c.inWindow, elapsed.Round(time.Second), c.min)
}

// bodyReader wraps a request body with the idle deadline and the rate check.
type bodyReader struct {
	io.ReadCloser
	rate *rateCheck
	// space reserves disk space for what is read.
	space *reservation
	// fail turns dab's answer into the form the handler answers with
	// (dab's JSON or tusd's).
	fail func(*httpError) error
	rc   *http.ResponseController
	// idle bounds the wait for the next byte (tusd, which moves the
	// deadline on after each read itself, passes its own timeout).
	idle time.Duration
	// stopped is set once the transfer was found too slow.
	stopped bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	deadline := time.Now().Add(b.idle)
	if d := b.rate.deadline(); !d.IsZero() && d.Before(deadline) {
		deadline = d
	}
	b.rc.SetReadDeadline(deadline)
	n, err := b.ReadCloser.Read(p)
	now := time.Now()
	msg, ok := b.rate.add(n, now)
	if !ok || errors.Is(err, os.ErrDeadlineExceeded) && b.rate != nil && b.rate.inWindow < b.rate.need() && !now.Before(b.rate.windowStart.Add(b.rate.window)) {
		if msg == "" {
			msg = b.rate.message(now)
		}
		b.stop(now)
		return n, b.fail(&httpError{http.StatusRequestTimeout, "too_slow", msg})
	}
	if serr := b.space.wrote(n); serr != nil {
		b.stop(now)
		he, ok := serr.(*httpError)
		if !ok {
			he = &httpError{http.StatusInternalServerError, "internal", serr.Error()}
		}
		return n, b.fail(he)
	}
	return n, err
}

// stop ends the connection's reading now: otherwise the server would go on
// draining the rest of the body after the answer, holding the connection.
func (b *bodyReader) stop(now time.Time) {
	b.rc.SetReadDeadline(now)
	b.stopped = true
}
