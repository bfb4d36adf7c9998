package harness

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// WriterInProcess writes first into a new file at path, opened with flag
// (os.O_WRONLY or os.O_RDWR), and keeps it open in this process; finish
// writes second and closes the file. A check for open writers must see the
// test's (the watcher's own) process too.
func WriterInProcess(t testing.TB, path string, flag int, first []byte) (finish func(second []byte)) {
	t.Helper()
	f, err := os.OpenFile(path, flag|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(first); err != nil {
		t.Fatal(err)
	}
	return func(second []byte) {
		if _, err := f.Write(second); err != nil {
			t.Error(err)
		}
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}
}

// WriterChild writes first into a new file at path from a shell that keeps
// the file open (fd 3); finish makes it write second and exit.
func WriterChild(t testing.TB, path string, first []byte) (finish func(second []byte)) {
	t.Helper()
	parts := t.TempDir()
	p1, p2 := filepath.Join(parts, "1"), filepath.Join(parts, "2")
	if err := os.WriteFile(p1, first, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `exec 3>"$1"; cat "$2" >&3; read go; cat "$3" >&3`, "sh", path, p1, p2)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	Eventually(t, 10*time.Second, "the writer process to write its first part", func() bool {
		st, err := os.Stat(path)
		return err == nil && st.Size() == int64(len(first))
	}, nil)
	return func(second []byte) {
		if err := os.WriteFile(p2, second, 0o600); err != nil {
			t.Fatal(err)
		}
		io.WriteString(stdin, "go\n")
		stdin.Close()
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			if err != nil {
				t.Errorf("writer process: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the writer process did not finish")
		}
	}
}
