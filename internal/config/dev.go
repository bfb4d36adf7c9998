package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DevState is what a running `dab dev` writes into its data folder so that
// client commands run with the same DAB_DATA_DIR find its Redis and store.
type DevState struct {
	PID        int       `json:"pid"`
	StartedAt  time.Time `json:"started_at"`
	RedisURL   string    `json:"redis_url"`
	S3Endpoint string    `json:"s3_endpoint"`
	Bucket     string    `json:"bucket"`
	AccessKey  string    `json:"access_key"`
	SecretKey  string    `json:"secret_key"`
	// ChecksumMode of the store dab dev started (off for the in-process stand-in).
	ChecksumMode string `json:"checksum_mode"`
	// RedisPassword is what its redis-server requires of every client
	// (also in RedisURL): any local user could reach an open one.
	RedisPassword string `json:"redis_password,omitempty"`
	// Ports are reused at the next start so URLs stay stable.
	RedisPort int `json:"redis_port"`
	S3Port    int `json:"s3_port"`
	// HTTP API of the running dab dev and its admin token.
	HTTPURL    string `json:"http_url"`
	AdminToken string `json:"admin_token"`
}

// DevDir is the folder `dab dev` keeps its servers' data in.
func DevDir(dataDir string) string { return filepath.Join(dataDir, "dev") }

func devStatePath(dataDir string) string { return filepath.Join(DevDir(dataDir), "dev.json") }

// ReadDevState reads the state file; it returns nil, nil when there is none.
// A state file that is not the current user's, or that another user could
// have written (it, its folder or the data folder belongs to someone else
// or is writable by everyone: a dab-data planted in a shared folder), is
// refused with ErrForeignDevState: following it would send files, commands
// and the token to someone else's Redis and store. What is checked is what
// is read: the folders and the file are opened once, without following a
// link below the data folder, and checked and read through those handles.
func ReadDevState(dataDir string) (*DevState, error) {
	b, err := readOwnDevState(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st DevState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("dev state %s is damaged (%v): remove it and start `dab dev` again", devStatePath(dataDir), err)
	}
	return &st, nil
}

// ErrForeignDevState: a `dab dev` state file that another user could have
// written is not followed.
var ErrForeignDevState = errors.New("not following a dab dev state someone else could have written")

// readOwnDevState reads dataDir/dev/dev.json through handles whose owner
// and mode it checks: the data folder (a link to it is followed: it may
// live elsewhere), then dev and dev.json below it (never links).
func readOwnDevState(dataDir string) ([]byte, error) {
	dir, dev, err := openDevDirs(dataDir, false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	defer unix.Close(dev)
	fd, err := openOwnFile(dev, "dev.json", devStatePath(dataDir), unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), devStatePath(dataDir))
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("dev state: %w", err)
	}
	return b, nil
}

// openDevDirs opens and checks (checkOwn) the data folder (a link to it is
// followed) and its dev folder (never a link), making dev first with
// create. The caller closes both.
func openDevDirs(dataDir string, create bool) (dir, dev int, err error) {
	dir, err = unix.Open(dataDir, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, -1, devStateError(dataDir, err)
	}
	if err := checkOwn(dir, dataDir); err != nil {
		unix.Close(dir)
		return -1, -1, err
	}
	if create {
		if err := unix.Mkdirat(dir, "dev", 0o750); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(dir)
			return -1, -1, fmt.Errorf("dev state %s: %w", DevDir(dataDir), err)
		}
	}
	dev, err = unix.Openat(dir, "dev", unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
	if err == nil {
		err = checkOwn(dev, DevDir(dataDir))
		if err != nil {
			unix.Close(dev)
		}
	} else {
		err = devStateError(DevDir(dataDir), err)
	}
	if err != nil {
		unix.Close(dir)
		return -1, -1, err
	}
	return dir, dev, nil
}

// openOwnFile opens name below the folder dev (never a link, never a
// device or FIFO: O_NONBLOCK, then a regular file is required) and checks
// it is the user's own.
func openOwnFile(dev int, name, path string, mode int) (int, error) {
	fd, err := unix.Openat(dev, name, mode|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return -1, devStateError(path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is not a regular file", ErrForeignDevState, path)
	}
	if err := checkOwn(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// LockDevDir takes the lock that a running `dab dev` holds on its data
// folder for its whole life (dev/lock), making the dev folder if needed:
// one dab dev per data folder, and how client commands know one runs
// (DevRunning). Nothing is made or opened through a link or in a folder
// that is not the user's own. It fails with ErrDevRunning when another
// dab dev holds the lock.
func LockDevDir(dataDir string) (unlock func(), err error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("dev state: %w", err)
	}
	dir, dev, err := openDevDirs(dataDir, true)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	defer unix.Close(dev)
	fd, err := openOwnFile(dev, "lock", filepath.Join(DevDir(dataDir), "lock"), unix.O_RDWR|unix.O_CREAT)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrDevRunning
		}
		return nil, fmt.Errorf("dev state: lock %s: %w", DevDir(dataDir), err)
	}
	return func() { unix.Close(fd) }, nil
}

// ErrDevRunning: another `dab dev` holds the data folder's lock.
var ErrDevRunning = errors.New("another dab dev runs with this data folder")

// DevRunning reports whether a `dab dev` holds the lock of dataDir: it
// runs, whatever PID its state file names (a PID can be reused by any
// process after a crash or a reboot).
func DevRunning(dataDir string) bool {
	dir, dev, err := openDevDirs(dataDir, false)
	if err != nil {
		return false
	}
	defer unix.Close(dir)
	defer unix.Close(dev)
	fd, err := openOwnFile(dev, "lock", filepath.Join(DevDir(dataDir), "lock"), unix.O_RDONLY)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return errors.Is(unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
}

// devStateError reports a failed open: a missing file or folder is
// fs.ErrNotExist (no state), a link where none may be is foreign.
func devStateError(path string, err error) error {
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		if st, lerr := os.Lstat(path); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
			err = unix.ELOOP
		} else if errors.Is(err, unix.ENOTDIR) {
			err = unix.ENOENT // a file where a folder belongs: no state
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return fs.ErrNotExist
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%w: %s is a link: dab follows only a `dab dev` state of your own; set DAB_DATA_DIR or DAB_REDIS_URL", ErrForeignDevState, path)
	}
	return fmt.Errorf("dev state %s: %w", path, err)
}

// checkOwn refuses what fd holds unless the current user owns it and not
// everyone may write it (a group-writable folder of one's own is fine: many
// systems give each user a group of their own, umask 002).
func checkOwn(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("dev state %s: %w", path, err)
	}
	uid := os.Geteuid()
	if int(st.Uid) != uid {
		return fmt.Errorf("%w: %s belongs to user %d, not to you (%d): dab follows only a `dab dev` state of your own; set DAB_DATA_DIR or DAB_REDIS_URL",
			ErrForeignDevState, path, st.Uid, uid)
	}
	if st.Mode&0o002 != 0 {
		return fmt.Errorf("%w: every user may write %s (mode %o): make it yours alone (chmod o-w %s), or set DAB_DATA_DIR or DAB_REDIS_URL",
			ErrForeignDevState, path, st.Mode&0o7777, path)
	}
	return nil
}

// FindDevState reads the state of a `dab dev` (running or not: see
// DevRunning) for a client command: in dataDir, and, with search (no data
// folder was given, dataDir is the relative default), in the dab-data of
// each folder above when there is none in dataDir, so that a command run
// from a subfolder of where `dab dev` runs (the drop folder, say) finds it. A state above that is not
// one's own is passed over, not followed (nor an error: someone else's
// folder must not stop a command); one in dataDir itself is an error. It
// returns the data folder the state was found in (links resolved, so that
// it cannot be swapped for another afterwards), or dataDir and nil.
func FindDevState(dataDir string, search bool) (string, *DevState, error) {
	st, err := ReadDevState(dataDir)
	if st != nil || err != nil || !search || filepath.IsAbs(dataDir) {
		return resolved(dataDir), st, err
	}
	dir, err := os.Getwd()
	if err != nil {
		return dataDir, nil, nil
	}
	for {
		parent := filepath.Dir(dir)
		if parent == dir {
			return dataDir, nil, nil
		}
		dir = parent
		cand := filepath.Join(dir, dataDir)
		if st, err := ReadDevState(cand); st != nil && err == nil {
			return resolved(cand), st, nil
		}
	}
}

// resolved is dir with its links resolved, or dir when that fails.
func resolved(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		if abs, err := filepath.Abs(r); err == nil {
			return abs
		}
	}
	return dir
}

// WriteDevState writes the state file, readable by its owner only (it holds
// the local store's keys).
func WriteDevState(dataDir string, st *DevState) error {
	if err := os.MkdirAll(DevDir(dataDir), 0o750); err != nil {
		return fmt.Errorf("dev state: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("dev state: %w", err)
	}
	tmp := devStatePath(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("dev state: %w", err)
	}
	if err := os.Rename(tmp, devStatePath(dataDir)); err != nil {
		return fmt.Errorf("dev state: %w", err)
	}
	return nil
}

// UsesDev reports whether this configuration should follow a running `dab
// dev`: only when none of the Redis URL, bucket and endpoint was given.
func (c *Config) UsesDev() bool {
	return !c.Explicit("DAB_REDIS_URL") && !c.Explicit("AWS_S3_BUCKET") && !c.Explicit("AWS_ENDPOINT_URL_S3")
}

// ApplyDev points the configuration at the servers of a running `dab dev`.
func (c *Config) ApplyDev(st *DevState) {
	set := func(env string, dst *string, v string) {
		if v != "" {
			*dst = v
			c.Sources[env] = "dev"
		}
	}
	set("DAB_REDIS_URL", &c.RedisURL, st.RedisURL)
	set("AWS_S3_BUCKET", &c.S3.Bucket, st.Bucket)
	set("AWS_ENDPOINT_URL_S3", &c.S3.Endpoint, st.S3Endpoint)
	set("AWS_ACCESS_KEY_ID", &c.S3.AccessKeyID, st.AccessKey)
	set("AWS_SECRET_ACCESS_KEY", &c.S3.SecretAccessKey, st.SecretKey)
	set("DAB_S3_CHECKSUM", &c.S3.ChecksumMode, st.ChecksumMode)
	// The admin token goes only to this dab dev's own API: DAB_SERVER may
	// name another server.
	if c.Token == "" && c.Server != "" && c.Server == st.HTTPURL {
		set("DAB_TOKEN", &c.Token, st.AdminToken)
	}
	if st.S3Endpoint != "" {
		c.S3.PathStyle = true
		c.Sources["DAB_S3_PATH_STYLE"] = "dev"
		c.S3.SessionToken = ""
		if c.S3.Region == "" {
			c.S3.Region = "us-east-1"
			c.Sources["AWS_REGION"] = "dev"
		}
	}
}
