package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
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
// have written (it, its folder or the data folder is someone else's or
// writable by others: a dab-data planted in a shared folder), is refused:
// following it would send files, commands and the token to someone else's
// Redis and store.
func ReadDevState(dataDir string) (*DevState, error) {
	b, err := os.ReadFile(devStatePath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dev state: %w", err)
	}
	if err := checkOwnDevState(dataDir); err != nil {
		return nil, err
	}
	var st DevState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("dev state %s is damaged (%v): remove it and start `dab dev` again", devStatePath(dataDir), err)
	}
	return &st, nil
}

// checkOwnDevState refuses a state file whose file, dev folder or data
// folder another user owns or may write.
func checkOwnDevState(dataDir string) error {
	uid := os.Geteuid()
	for _, p := range []string{devStatePath(dataDir), DevDir(dataDir), dataDir} {
		st, err := os.Lstat(p)
		if err == nil && st.Mode()&fs.ModeSymlink != 0 && p == dataDir {
			st, err = os.Stat(p) // a data folder may be a link to one of yours
		}
		if err != nil {
			return fmt.Errorf("dev state: %w", err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // no owners to check on this system
		}
		if st.Mode()&fs.ModeSymlink != 0 || int(sys.Uid) != uid || st.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%w: %s belongs to user %d (you are %d), is a link, or other users may write it (%v): dab follows only a `dab dev` state of your own; remove %s, or set DAB_DATA_DIR or DAB_REDIS_URL",
				ErrForeignDevState, p, sys.Uid, uid, st.Mode(), DevDir(dataDir))
		}
	}
	return nil
}

// ErrForeignDevState: a `dab dev` state file that another user could have
// written is not followed.
var ErrForeignDevState = errors.New("not following a dab dev state someone else could have written")

// FindDevDataDir is where a client command looks for the state of a running
// `dab dev` when no data folder was given: dataDir (./dab-data) here, or
// the dab-data of the nearest folder above that has a state file, so that
// a command run from a subfolder of where `dab dev` runs (the drop folder,
// say) finds it. It returns dataDir when there is none.
func FindDevDataDir(dataDir string) string {
	if filepath.IsAbs(dataDir) {
		return dataDir
	}
	if _, err := os.Lstat(devStatePath(dataDir)); err == nil {
		return dataDir
	}
	dir, err := os.Getwd()
	if err != nil {
		return dataDir
	}
	for {
		parent := filepath.Dir(dir)
		if parent == dir {
			return dataDir
		}
		dir = parent
		cand := filepath.Join(dir, dataDir)
		if _, err := os.Lstat(devStatePath(cand)); err == nil {
			return cand
		}
	}
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

// Running reports whether the process that wrote the state is alive.
func (st *DevState) Running() bool {
	if st == nil || st.PID <= 0 {
		return false
	}
	err := syscall.Kill(st.PID, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
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
	if c.Token == "" {
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
