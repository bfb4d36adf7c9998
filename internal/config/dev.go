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
func ReadDevState(dataDir string) (*DevState, error) {
	b, err := os.ReadFile(devStatePath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dev state: %w", err)
	}
	var st DevState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("dev state %s is damaged (%v): remove it and start `dab dev` again", devStatePath(dataDir), err)
	}
	return &st, nil
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
