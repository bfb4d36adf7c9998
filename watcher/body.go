package watcher

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// Upload bodies are read through bodyReader, which keeps a slow but steady
// client going and ends one that only holds a slot: every read moves the
// connection's read deadline ahead (so a client that sends nothing for
// IdleTimeout is cut off), and every MinRateWindow the bytes that arrived
// in it must average at least MinRate a second (so a client that sends a
// byte now and then cannot keep an upload slot for hours).

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
	return &rateCheck{min: in.cfg.MinRate, window: in.cfg.MinRateWindow, windowStart: time.Now()}
}

// add counts n bytes read at now and returns a message when the window
// that just closed fell short of the minimum.
func (c *rateCheck) add(n int, now time.Time) (string, bool) {
	if c == nil || c.min <= 0 {
		return "", true
	}
	c.inWindow += int64(n)
	elapsed := now.Sub(c.windowStart)
	if elapsed < c.window {
		return "", true
	}
	if rate := float64(c.inWindow) / elapsed.Seconds(); rate < float64(c.min) {
		return fmt.Sprintf("the upload arrived at %.0f bytes/s over the last %s, below the %d bytes/s this server requires (DAB_MIN_UPLOAD_RATE): it was stopped; send it again over a faster connection", rate, elapsed.Round(time.Second), c.min), false
	}
	c.windowStart, c.inWindow = now, 0
	return "", true
}

// bodyReader wraps a request body with the idle deadline and the rate check.
type bodyReader struct {
	io.ReadCloser
	rate *rateCheck
	// tooSlow builds the error a too slow transfer ends with, in the form
	// its handler answers (dab's JSON or tusd's).
	tooSlow func(msg string) error
	rc      *http.ResponseController
	// idle, when set, moves the read deadline ahead on every read (tusd
	// manages its own).
	idle time.Duration
	// stopped is set once the transfer was found too slow.
	stopped bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.idle > 0 {
		b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	if msg, ok := b.rate.add(n, time.Now()); !ok {
		// End the connection's reading now: otherwise the server would go
		// on draining the trickle after the answer, holding the connection.
		b.rc.SetReadDeadline(time.Now())
		b.stopped = true
		return n, b.tooSlow(msg)
	}
	return n, err
}
