package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadDevStateRefusesForeign: a `dab dev` state that another user owns
// or could have written (the file, its folder, the data folder; or a link
// in their place) is refused with ErrForeignDevState; one's own is read.
func TestReadDevStateRefusesForeign(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, dataDir string)
	}{
		{"own", func(*testing.T, string) {}},
		{"own, group-writable (umask 002)", func(t *testing.T, d string) { chmod(t, d, 0o770); chmod(t, DevDir(d), 0o770) }},
		{"file writable by everyone", func(t *testing.T, d string) { chmod(t, devStatePath(d), 0o602) }},
		{"dev folder writable by everyone", func(t *testing.T, d string) { chmod(t, DevDir(d), 0o777) }},
		{"data folder writable by everyone", func(t *testing.T, d string) { chmod(t, d, 0o757) }},
		{"file a link", func(t *testing.T, d string) {
			other := filepath.Join(t.TempDir(), "elsewhere.json")
			if err := os.Rename(devStatePath(d), other); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, devStatePath(d)); err != nil {
				t.Fatal(err)
			}
		}},
		{"dev folder a link", func(t *testing.T, d string) {
			other := filepath.Join(t.TempDir(), "elsewhere")
			if err := os.Rename(DevDir(d), other); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, DevDir(d)); err != nil {
				t.Fatal(err)
			}
		}},
		{"file another user's", func(t *testing.T, d string) {
			if os.Geteuid() != 0 {
				t.Skip("giving a file to another user takes root")
			}
			if err := os.Chown(devStatePath(d), 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dataDir := filepath.Join(t.TempDir(), "dab-data")
			if err := WriteDevState(dataDir, &DevState{PID: 1, RedisURL: "redis://127.0.0.1:1"}); err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, dataDir)
			st, err := ReadDevState(dataDir)
			if strings.HasPrefix(tc.name, "own") {
				if err != nil || st == nil || st.RedisURL != "redis://127.0.0.1:1" {
					t.Fatalf("own state: %+v, %v", st, err)
				}
				return
			}
			if !errors.Is(err, ErrForeignDevState) || st != nil {
				t.Fatalf("%s: %+v, %v; want ErrForeignDevState", tc.name, st, err)
			}
		})
	}
}

func chmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// TestFindDevState: without a data folder given, the state is looked for
// in ./dab-data, then in the dab-data of each folder above, passing over
// one that is not the user's own; a data folder given is not searched from.
func TestFindDevState(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteDevState(filepath.Join(root, "dab-data"), &DevState{PID: 1, RedisURL: "redis://root"}); err != nil {
		t.Fatal(err)
	}
	// Closer to where the command runs, a state others may have written.
	mid := filepath.Join(root, "drop")
	if err := WriteDevState(filepath.Join(mid, "dab-data"), &DevState{PID: 1, RedisURL: "redis://planted"}); err != nil {
		t.Fatal(err)
	}
	chmod(t, DevDir(filepath.Join(mid, "dab-data")), 0o777)
	sub := filepath.Join(mid, "cyoa", "forest")
	if err := os.MkdirAll(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	dir, st, err := FindDevState("./dab-data", true)
	if err != nil || st == nil || st.RedisURL != "redis://root" || dir != filepath.Join(root, "dab-data") {
		t.Fatalf("from %s: %s, %+v, %v; want root's", sub, dir, st, err)
	}
	if dir, st, err := FindDevState("./dab-data", false); err != nil || st != nil || dir != "./dab-data" {
		t.Fatalf("without search: %s, %+v, %v", dir, st, err)
	}
	// Where the command runs, a foreign state is an error, not passed over.
	t.Chdir(mid)
	if _, st, err := FindDevState("./dab-data", true); !errors.Is(err, ErrForeignDevState) || st != nil {
		t.Fatalf("in the folder itself: %+v, %v", st, err)
	}
}

// TestDevTokenGoesOnlyToItsServer: the admin token of a followed dab dev is
// used only when DAB_SERVER names that dab dev's own API.
func TestDevTokenGoesOnlyToItsServer(t *testing.T) {
	t.Parallel()
	st := &DevState{PID: 1, HTTPURL: "http://127.0.0.1:8080", AdminToken: "dev-admin-token"}
	for _, tc := range []struct {
		server, want string
	}{{"", ""}, {"http://127.0.0.1:8080", "dev-admin-token"}, {"https://dab.example.org", ""}} {
		c := &Config{Server: tc.server, Sources: map[string]string{}}
		c.ApplyDev(st)
		if c.Token != tc.want {
			t.Errorf("DAB_SERVER %q: token %q, want %q", tc.server, c.Token, tc.want)
		}
	}
}

// TestDevLock: a dab dev holds its data folder's lock for its life; a
// second cannot take it, and DevRunning says so only while it is held. The
// lock is never made through a link another user planted.
func TestDevLock(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "dab-data")
	if DevRunning(dataDir) {
		t.Fatal("running before any dab dev")
	}
	unlock, err := LockDevDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !DevRunning(dataDir) {
		t.Fatal("not running while the lock is held")
	}
	if _, err := LockDevDir(dataDir); !errors.Is(err, ErrDevRunning) {
		t.Fatalf("a second lock: %v, want ErrDevRunning", err)
	}
	unlock()
	if DevRunning(dataDir) {
		t.Fatal("running after the lock was let go")
	}

	// A lock planted as a link to elsewhere: nothing is made there.
	planted := filepath.Join(t.TempDir(), "dab-data")
	if err := os.MkdirAll(DevDir(planted), 0o750); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "made-through-a-link")
	if err := os.Symlink(target, filepath.Join(DevDir(planted), "lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := LockDevDir(planted); !errors.Is(err, ErrForeignDevState) {
		t.Fatalf("a linked lock: %v, want ErrForeignDevState", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was made through the link: %v", err)
	}
	// A dev folder others may write: refused before anything is made in it.
	open := filepath.Join(t.TempDir(), "dab-data")
	if err := os.MkdirAll(DevDir(open), 0o750); err != nil {
		t.Fatal(err)
	}
	chmod(t, DevDir(open), 0o777)
	if _, err := LockDevDir(open); !errors.Is(err, ErrForeignDevState) {
		t.Fatalf("an open dev folder: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(DevDir(open), "lock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a lock was made in it: %v", err)
	}
}
