package config

import (
	"errors"
	"os"
	"path/filepath"
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
		{"file writable by others", func(t *testing.T, d string) { chmod(t, devStatePath(d), 0o666) }},
		{"dev folder writable by others", func(t *testing.T, d string) { chmod(t, DevDir(d), 0o777) }},
		{"data folder writable by its group", func(t *testing.T, d string) { chmod(t, d, 0o770) }},
		{"file a link", func(t *testing.T, d string) {
			other := filepath.Join(t.TempDir(), "elsewhere.json")
			if err := os.Rename(devStatePath(d), other); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, devStatePath(d)); err != nil {
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
			if tc.name == "own" {
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

// TestFindDevDataDir: without a data folder given, the state is looked for
// in ./dab-data, then in the dab-data of each folder above; an absolute
// data folder is taken as it is.
func TestFindDevDataDir(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteDevState(filepath.Join(root, "dab-data"), &DevState{PID: 1}); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "drop", "cyoa", "forest")
	if err := os.MkdirAll(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	if got := FindDevDataDir("./dab-data"); got != filepath.Join(root, "dab-data") {
		t.Fatalf("from %s: %s", sub, got)
	}
	if got := FindDevDataDir("/srv/dab"); got != "/srv/dab" {
		t.Fatalf("absolute: %s", got)
	}
	// A folder beside root's tree does not find root's state (what is above
	// the test's temporary folders is the machine's, not checked here).
	t.Chdir(t.TempDir())
	if got := FindDevDataDir("./dab-data"); got == filepath.Join(root, "dab-data") {
		t.Fatalf("from outside its tree: %s", got)
	}
}
