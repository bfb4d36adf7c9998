package main

// The one table the bench prints, and the formatting of its cells.

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the table.
type row struct{ work, dab, s5cmd, ratio, rss string }

type table struct {
	rows  []row
	notes []string
}

func (t *table) add(r row) {
	t.rows = append(t.rows, r)
	msg := strings.TrimSpace(r.work) + ": dab " + r.dab
	for _, cell := range []string{r.s5cmd, r.ratio} {
		if cell != "" {
			msg += "; " + cell
		}
	}
	progress("%s", msg)
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(r row) { fmt.Fprintf(tw, "%s\t| %s\t| %s\t| %s\t| %s\n", r.work, r.dab, r.s5cmd, r.ratio, r.rss) }
	line(row{"work", "dab", "s5cmd", "dab/s5cmd (time)", "peak RSS"})
	line(row{"----", "---", "-----", "----------------", "--------"})
	for _, r := range t.rows {
		line(r)
	}
	tw.Flush()
	for _, n := range t.notes {
		fmt.Fprintln(w, "  note:", n)
	}
}

// seconds is "5.21 s" (or "812 ms" under a second).
func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

// millis is a latency in milliseconds.
func millis(d time.Duration) string {
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

// mib is a size in MiB.
func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// count writes n with thousands separators: 100,000.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// perSec is "384 files/s" (a rate is rounded to whole units from 10 on).
func perSec(n float64, secs float64, unit string) string {
	r := n / secs
	if r < 10 {
		return fmt.Sprintf("%.1f %s/s", r, unit)
	}
	return count(int(r+0.5)) + " " + unit + "/s"
}

// size is a byte count as the flags write it: 4 KiB, 64 MiB, 1 GiB.
func size(b int64) string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if b >= u.n && b%u.n == 0 {
			return fmt.Sprintf("%d %s", b/u.n, u.name)
		}
	}
	return fmt.Sprintf("%d B", b)
}
