package spool

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// claimTraceEnv makes TestClaimNoteOnDiskBeforeTheFileMoves, run again as a
// child under strace, do the claim it watches.
const claimTraceEnv = "DAB_TEST_CLAIM_TRACE_DIR"

// TestClaimNoteOnDiskBeforeTheFileMoves: before Claim renames a file out of
// the drop folder, the origin note, its folder's entry for it and
// .incoming's entry for the folder are fsynced. A power cut right after the
// rename must find the note (Recover puts the file back from it); on a
// filesystem without a journal that orders metadata, nothing else makes
// them reach the disk before the rename. What reached the disk when is seen
// in the system calls, so the claim runs in a child process under strace.
func TestClaimNoteOnDiskBeforeTheFileMoves(t *testing.T) {
	if dir := os.Getenv(claimTraceEnv); dir != "" {
		s, err := Open(filepath.Join(dir, "spool"))
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(dir, "drop", "generic", "a.bin")
		st, err := os.Stat(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Claim(src, Input{Type: "generic", Path: "a.bin"}, FileState{Size: st.Size(), ModTime: st.ModTime()}); err != nil {
			t.Fatal(err)
		}
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is needed to watch the claim's system calls: apt-get install strace (make deps installs it)")
	}
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if _, err := Open(spoolDir); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "drop", "generic", "a.bin")
	dropFile(t, src, "the bytes of a.bin")
	trace := filepath.Join(dir, "trace")
	cmd := exec.Command(strace, "-f", "-qq", "-y", "-e", "trace=fsync,rename,renameat,renameat2", "-o", trace,
		os.Args[0], "-test.run=^TestClaimNoteOnDiskBeforeTheFileMoves$", "-test.count=1")
	cmd.Env = append(os.Environ(), claimTraceEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the claim under strace: %v\n%s", err, out)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	// The rename that takes the file: src into <spool>/.incoming/<id>/data.
	take := regexp.MustCompile(`rename(at2?)?\(.*"` + regexp.QuoteMeta(src) + `".*"(` + regexp.QuoteMeta(filepath.Join(spoolDir, incomingDir)) + `/[^/"]+)/data"`)
	at, folder := -1, ""
	for i, l := range lines {
		if m := take.FindStringSubmatch(l); m != nil {
			at, folder = i, m[2]
			break
		}
	}
	if at < 0 {
		t.Fatalf("no rename of %s into the spool in the trace:\n%s", src, b)
	}
	for _, want := range []string{filepath.Join(folder, originFile), folder, filepath.Join(spoolDir, incomingDir)} {
		synced := false
		for _, l := range lines[:at] {
			if strings.Contains(l, "fsync(") && strings.Contains(l, "<"+want+">") {
				synced = true
			}
		}
		if !synced {
			t.Errorf("%s was not fsynced before the file was renamed into the spool; the system calls:\n%s", want, strings.Join(lines[:at+1], "\n"))
		}
	}
}
