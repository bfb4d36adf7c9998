package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Env of TestClaimBatchCrashChild, the process TestClaimBatchCrashes kills.
const (
	crashEnvSpool = "DAB_SPOOL_CRASH_SPOOL"
	crashEnvDrop  = "DAB_SPOOL_CRASH_DROP"
	crashEnvStep  = "DAB_SPOOL_CRASH_STEP"
)

// TestClaimBatchCrashChild claims every file of $DAB_SPOOL_CRASH_DROP in one
// batch and exits (status 3, as a process killed there) at the second time
// it reaches step $DAB_SPOOL_CRASH_STEP. Only TestClaimBatchCrashes runs it.
func TestClaimBatchCrashChild(t *testing.T) {
	spoolDir, drop, step := os.Getenv(crashEnvSpool), os.Getenv(crashEnvDrop), os.Getenv(crashEnvStep)
	if spoolDir == "" {
		t.Skip("run by TestClaimBatchCrashes")
	}
	s, err := Open(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(drop)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []ClaimRequest
	for _, de := range des {
		p := filepath.Join(drop, de.Name())
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, ClaimRequest{Src: p, In: Input{Type: "generic", Path: de.Name(), Source: "watcher"}, Seen: FileState{Size: st.Size(), ModTime: st.ModTime()}})
	}
	reached := 0
	s.crashPoint = func(at string) {
		if at == step {
			if reached++; reached == 2 || step != "batch.renamed" {
				os.Exit(3)
			}
		}
	}
	s.ClaimBatch(reqs)
	t.Fatalf("the batch ended without reaching %s", step)
}

// TestClaimBatchCrashes: a process killed at any step of a batch claim
// (after its note, between its files' renames, after its commit) loses no
// file: after Recover each file is either back in the drop folder or in
// exactly one whole entry, and nothing of the batch is left in .incoming.
func TestClaimBatchCrashes(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"batch.noted", "batch.renamed", "batch.committed"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			drop := t.TempDir()
			want := map[string]string{}
			for i := range 6 {
				name := fmt.Sprintf("f%d.bin", i)
				want[name] = strings.Repeat(name, 10)
				if err := os.WriteFile(filepath.Join(drop, name), []byte(want[name]), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestClaimBatchCrashChild$")
			cmd.Env = append(os.Environ(), crashEnvSpool+"="+s.Dir(), crashEnvDrop+"="+drop, crashEnvStep+"="+step)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Fatalf("child: %v (want exit status 3)\n%s", err, out)
			}

			restarted, err := Open(s.Dir())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range restarted.Recover() {
				if r.Err != nil {
					t.Fatalf("Recover: %+v", r)
				}
			}
			if left := dirNames(t, filepath.Join(s.Dir(), incomingDir)); len(left) != 0 {
				t.Fatalf(".incoming holds %v after Recover", left)
			}
			got := map[string]int{}
			ids, _ := restarted.IDs()
			for _, id := range ids {
				m, err := restarted.Get(id)
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(restarted.DataPath(id))
				if err != nil || string(b) != want[m.Path] || m.Size != int64(len(b)) {
					t.Fatalf("entry %s (%s) holds %q, %v", id, m.Path, b, err)
				}
				got[m.Path]++
			}
			for _, name := range dirNames(t, drop) {
				b, _ := os.ReadFile(filepath.Join(drop, name))
				if !bytes.Equal(b, []byte(want[name])) {
					t.Fatalf("%s is back with %q", name, b)
				}
				got[name]++
			}
			for name := range want {
				if got[name] != 1 {
					t.Fatalf("%s is in %d places (entries and drop folder), want exactly 1", name, got[name])
				}
			}
			if step == "batch.committed" && len(ids) != len(want) {
				t.Fatalf("%d entries after a crash past the commit, want %d", len(ids), len(want))
			}
		})
	}
}
