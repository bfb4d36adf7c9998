package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
)

// TestConcurrentCommitsGoTogether: streams that commit while another is
// being made durable go together, in one batch; every entry is whole.
func TestConcurrentCommitsGoTogether(t *testing.T) {
	t.Parallel()
	s := open(t)
	const n = 16
	var mu sync.Mutex
	steps := map[string]int{}
	s.crashPoint = func(step string) {
		mu.Lock()
		steps[step]++
		first := step == "commit.alone" && steps[step] == 1
		mu.Unlock()
		if !first {
			return
		}
		// The first commit is alone; it waits here until every other has
		// come, as a slow fsync would make them.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			s.commits.mu.Lock()
			waiting := len(s.commits.pending)
			s.commits.mu.Unlock()
			if waiting == n-1 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	ms := make([]*Manifest, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i], errs[i] = s.Put(bytes.NewReader([]byte(fmt.Sprint("stream ", i))), Input{Type: "generic", Path: fmt.Sprintf("s%02d.txt", i), Source: "test"})
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("put %d: %v", i, errs[i])
		}
		checkEntry(t, s, ms[i], fmt.Sprint("stream ", i))
	}
	if steps["commit.alone"] != 1 || steps["commit.synced"] != 1 || steps["commit.renamed"] != n-1 {
		t.Fatalf("commit steps %v; want one alone, then one batch of the %d others", steps, n-1)
	}
}

// checkEntry checks that entry m reads back whole, holding want.
func checkEntry(t *testing.T, s *Spool, m *Manifest, want string) {
	t.Helper()
	got, err := s.Get(m.ID)
	sum := sha256.Sum256([]byte(want))
	if err != nil || got.SHA256 != hex.EncodeToString(sum[:]) || got.Size != int64(len(want)) {
		t.Fatalf("entry %s = %+v, %v; want %q", m.ID, got, err, want)
	}
	f, _, err := s.OpenData(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 100)
	k, _ := f.Read(b)
	if string(b[:k]) != want {
		t.Fatalf("entry %s holds %q, want %q", m.ID, b[:k], want)
	}
}

// TestGroupCommitCrash: a crash inside a batch leaves its entries either in
// place and whole or in .incoming, where Recover removes them as streams
// that never finished (their producers, in the crashed process, reported
// nothing as done).
func TestGroupCommitCrash(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		step    string
		inPlace int
	}{
		{"commit.synced", 0},
		{"commit.renamed", 1},
	} {
		t.Run(tt.step, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			var batch []*streamCommit
			var unlocks []func()
			for i := range 4 {
				w, err := s.Create()
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprint(w, "crash ", i)
				m, err := s.newManifest(Input{Type: "generic", Path: fmt.Sprintf("c%d.txt", i)})
				if err != nil {
					t.Fatal(err)
				}
				m.ID, m.Size, m.SHA256 = w.id, w.n, hex.EncodeToString(w.h.Sum(nil))
				if err := writeJSONInPlace(w.tmp+"/"+manifestFile, m, false); err != nil {
					t.Fatal(err)
				}
				batch = append(batch, &streamCommit{tmp: w.tmp, data: w.f, m: m, wake: make(chan struct{}, 1)})
				unlocks = append(unlocks, w.unlock)
			}
			crashAt(t, s, tt.step, func() { s.commitBatch(batch, nil) })
			for _, u := range unlocks {
				u() // the crashed process's locks go with it
			}

			restarted, err := Open(s.Dir())
			if err != nil {
				t.Fatal(err)
			}
			removed := 0
			for _, r := range restarted.Recover() {
				if r.Action != RecoverRemoved || r.Err != nil {
					t.Fatalf("Recover: %+v; want streams removed", r)
				}
				removed++
			}
			ids, _ := restarted.IDs()
			if len(ids) != tt.inPlace || removed != 4-tt.inPlace {
				t.Fatalf("%d entries in place, %d removed; want %d in place", len(ids), removed, tt.inPlace)
			}
			for i, c := range batch[:tt.inPlace] {
				checkEntry(t, restarted, c.m, fmt.Sprint("crash ", i))
			}
		})
	}
}

// TestGroupCommitLeadersAreNotHeld: a leader makes one batch durable,
// then hands the lead to a commit that came meanwhile and returns: under a
// steady load of concurrent streams (the HTTP intake, dab upload) no
// commit waits for the batches after its own.
func TestGroupCommitLeadersAreNotHeld(t *testing.T) {
	t.Parallel()
	s := open(t)
	leading, firstReturned := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var order []string
	record := func(e string) {
		mu.Lock()
		order = append(order, e)
		mu.Unlock()
	}
	s.crashPoint = func(step string) {
		switch step {
		case "commit.alone": // the first commit, alone: two more come meanwhile
			close(leading)
			harness.Eventually(t, 10*time.Second, "two commits waiting", func() bool {
				s.commits.mu.Lock()
				defer s.commits.mu.Unlock()
				return len(s.commits.pending) == 2
			}, nil)
		case "commit.synced": // the batch of the other two
			select {
			case <-firstReturned:
			case <-time.After(5 * time.Second): // its leader is the first commit, which cannot return before
			}
			record("second batch synced")
		}
	}
	put := func(name string) {
		if _, err := s.Put(bytes.NewReader([]byte(name)), Input{Type: "generic", Path: name, Source: "test"}); err != nil {
			t.Error(err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		put("first.txt")
		record("first returned")
		close(firstReturned)
	}()
	<-leading
	for _, name := range []string{"second.txt", "third.txt"} {
		go func() {
			defer wg.Done()
			put(name)
		}()
	}
	wg.Wait()
	if want := []string{"first returned", "second batch synced"}; !slices.Equal(order, want) {
		t.Fatalf("events %v, want %v: the first commit made the next batch durable before it returned", order, want)
	}
}
