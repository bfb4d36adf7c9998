package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestClaimBatch: a batch takes every complete file in one group commit,
// each entry whole (manifest, data, SHA-256) and its origin note gone; a
// file that changed, one that is gone and one still open for writing are
// left as Claim leaves them, and the others are taken anyway.
func TestClaimBatch(t *testing.T) {
	s := open(t)
	drop := t.TempDir()
	var reqs []ClaimRequest
	want := map[string][]byte{}
	for i := range 20 {
		p := filepath.Join(drop, fmt.Sprintf("f%02d.bin", i))
		b := bytes.Repeat([]byte{byte(i)}, 100+i)
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(p)
		reqs = append(reqs, ClaimRequest{Src: p, In: Input{Type: "generic", Path: filepath.Base(p), Source: "test"}, Seen: FileState{Size: st.Size(), ModTime: st.ModTime()}})
		want[filepath.Base(p)] = b
	}
	// f03 changes after the watcher looked, f05 is deleted, f07 is open.
	time.Sleep(20 * time.Millisecond)
	os.WriteFile(reqs[3].Src, []byte("changed, longer than before..........................................................................................."), 0o640)
	os.Remove(reqs[5].Src)
	writer, err := os.OpenFile(reqs[7].Src, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()

	res := s.ClaimBatch(reqs)
	for i, r := range res {
		name := filepath.Base(reqs[i].Src)
		switch i {
		case 3:
			if r.Err == nil {
				t.Errorf("%s: taken although it changed", name)
			}
			if _, err := os.Stat(reqs[i].Src); err != nil {
				t.Errorf("%s: not put back: %v", name, err)
			}
		case 5:
			if r.Err == nil {
				t.Errorf("%s: taken although deleted", name)
			}
		case 7:
			if openForWriting(reqs[i].Src) && r.Err == nil {
				t.Errorf("%s: taken while open for writing", name)
			}
		default:
			if r.Err != nil {
				t.Errorf("%s: %v", name, r.Err)
				continue
			}
			got, err := os.ReadFile(s.DataPath(r.M.ID))
			if err != nil || !bytes.Equal(got, want[name]) {
				t.Errorf("%s: entry data %q %v", name, got, err)
			}
			m, err := s.Get(r.M.ID)
			if err != nil || m.SHA256 != r.M.SHA256 || m.Size != int64(len(want[name])) {
				t.Errorf("%s: manifest %+v %v", name, m, err)
			}
			if _, err := os.Stat(filepath.Join(s.dir, r.M.ID, originFile)); !os.IsNotExist(err) {
				t.Errorf("%s: origin note left: %v", name, err)
			}
			if _, err := os.Stat(reqs[i].Src); !os.IsNotExist(err) {
				t.Errorf("%s: still in the drop folder", name)
			}
		}
	}
	// Nothing half-done is left for Recover.
	if got := s.Recover(); len(got) != 0 {
		t.Errorf("Recover after a batch: %+v", got)
	}
	ids, _ := s.IDs()
	if len(ids) != 17 {
		t.Errorf("%d entries, want 17", len(ids))
	}
}
