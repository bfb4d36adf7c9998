package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progressMin is the file size from which `dab upload` draws a progress bar.
const progressMin = 8 << 20

// progressBar draws "name [=====>    ] 45% 120/260 MiB" on one terminal line,
// at most ten times a second.
type progressBar struct {
	w     io.Writer
	name  string
	total int64
	last  time.Time
}

func newProgressBar(w io.Writer, name string, total int64) *progressBar {
	return &progressBar{w: w, name: visibleText(name), total: total}
}

func (p *progressBar) update(n int64) {
	if time.Since(p.last) < 100*time.Millisecond && n < p.total {
		return
	}
	p.last = time.Now()
	const width = 30
	frac := float64(n) / float64(max(p.total, 1))
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %d/%d MiB", p.name, bar, frac*100, n>>20, p.total>>20)
}

func (p *progressBar) done() { fmt.Fprintln(p.w) }

// isTerminal reports whether w is a terminal (not merely a character
// device: /dev/null is one too).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
