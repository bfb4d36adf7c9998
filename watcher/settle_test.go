package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/spool"
)

func settleWatcher(t *testing.T, settle time.Duration) (*Watcher, string) {
	t.Helper()
	drop := t.TempDir()
	if err := os.MkdirAll(filepath.Join(drop, "generic"), 0o755); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{DropDir: drop, FailedDir: t.TempDir(), Types: []string{"generic"}, Settle: settle}, sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return w, drop
}

// TestReadyOldestFirstAndBounded: ready hands out complete files in the
// order they were first seen, at most limit per call, and a file seen anew
// (deleted, then back) takes its new place.
func TestReadyOldestFirstAndBounded(t *testing.T) {
	t.Parallel()
	w, drop := settleWatcher(t, 100*time.Millisecond)
	old := time.Now().Add(-2 * time.Hour)
	var paths []string
	for i := range 20 {
		p := filepath.Join(drop, "generic", fmt.Sprintf("f%02d", 19-i)) // names sort against arrival
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// Unchanged (mtime and ctime) for longer than the settle time before
	// they were seen: taken at the next look, without waiting again.
	time.Sleep(150 * time.Millisecond)
	for _, p := range paths {
		w.consider(p, false)
	}
	now := time.Now() // less than the settle time after they were seen
	var got []string
	for tries := 0; len(got) < len(paths); tries++ {
		if tries > 10 {
			t.Fatalf("ready gave %d of %d files", len(got), len(paths))
		}
		jobs := w.ready(now, 7)
		if len(jobs) > 7 {
			t.Fatalf("ready gave %d jobs, limit 7", len(jobs))
		}
		for _, j := range jobs {
			got = append(got, j.path)
		}
	}
	for i := range paths {
		if got[i] != paths[i] {
			t.Fatalf("order: %v, want arrival order %v", got, paths)
		}
	}
}

// TestReadyWaitsForFreshFiles: a file written just now (not renamed in)
// still needs two looks the settle time apart.
func TestReadyWaitsForFreshFiles(t *testing.T) {
	t.Parallel()
	w, drop := settleWatcher(t, time.Hour)
	p := filepath.Join(drop, "generic", "fresh")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.consider(p, false)
	now := time.Now()
	for i := range 3 {
		if jobs := w.ready(now.Add(time.Duration(i)*time.Minute), 10); len(jobs) != 0 {
			t.Fatalf("a fresh file was ready before the settle time: %+v", jobs)
		}
	}
	if jobs := w.ready(now.Add(61*time.Minute), 10); len(jobs) != 1 {
		t.Fatalf("after the settle time: %d jobs, want 1", len(jobs))
	}
}
