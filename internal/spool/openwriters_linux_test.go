package spool

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestOpenForWriting(t *testing.T) {
	t.Parallel()
	// holdIn keeps path open with flag in this process until the test ends.
	holdIn := func(flag int) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			f, err := os.OpenFile(path, flag, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
		}
	}
	// holdChild keeps path open in a shell; redirect is "<", ">>" or "<>".
	holdChild := func(redirect string) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			cmd := exec.Command("sh", "-c", `exec 3`+redirect+`"$1"; echo ready; read go`, "sh", path)
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				stdin.Close()
				cmd.Wait()
			})
			var b [6]byte
			if _, err := stdout.Read(b[:]); err != nil {
				t.Fatalf("the child did not open the file: %v", err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		hold func(t *testing.T, path string)
		want bool
	}{
		{"closed", func(*testing.T, string) {}, false},
		{"read-only here", holdIn(os.O_RDONLY), false},
		{"write-only here", holdIn(os.O_WRONLY), true},
		{"read-write here", holdIn(os.O_RDWR), true},
		{"appending here", holdIn(os.O_WRONLY | os.O_APPEND), true},
		{"read-only in a child", holdChild("<"), false},
		{"appending in a child", holdChild(">>"), true},
		{"read-write in a child", holdChild("<>"), true},
	} {
		for _, dir := range []string{"disk", "tmpfs"} {
			t.Run(tc.name+" on "+dir, func(t *testing.T) {
				t.Parallel()
				folder := t.TempDir()
				if dir == "tmpfs" {
					s, _ := acrossFilesystems(t)
					folder = s.Dir()
				}
				path := filepath.Join(folder, "f")
				if err := os.WriteFile(path, []byte("x"), 0o640); err != nil {
					t.Fatal(err)
				}
				tc.hold(t, path)
				if got := openForWriting(path); got != tc.want {
					t.Fatalf("openForWriting = %v, want %v", got, tc.want)
				}
			})
		}
	}
	t.Run("not a file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		fifo := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(fifo, 0o640); err != nil {
			t.Fatal(err)
		}
		done := make(chan bool, 1)
		go func() {
			done <- openForWriting(fifo) || openForWriting(filepath.Join(dir, "missing")) || openForWriting(dir)
		}()
		select {
		case got := <-done:
			if got {
				t.Fatal("a FIFO, a missing file or a folder reported open for writing")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("openForWriting blocked on a FIFO")
		}
	})
}
