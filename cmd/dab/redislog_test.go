package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
)

// TestRedisLoggerHidesPassword: go-redis's own messages reach dab's log as
// structured lines, with the Redis password hidden.
func TestRedisLoggerHidesPassword(t *testing.T) {
	t.Parallel()
	var buf harness.LogBuffer
	url := "redis://dab:s3cret-pass@10.0.0.5:6379/0"
	l := redisLogger{log: slog.New(slog.NewJSONHandler(&buf, nil)), secret: url}
	l.Printf(context.Background(), "redis: dial %s: %s", url, "connection refused")
	got := buf.String()
	if strings.Contains(got, "s3cret-pass") {
		t.Fatalf("password in the log: %s", got)
	}
	for _, want := range []string{`"msg":"redis.client"`, `"level":"WARN"`, "10.0.0.5:6379", "connection refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("log %s lacks %s", got, want)
		}
	}
}

// TestRedisLoggerQuietForClients: a client command logs go-redis's
// messages at debug, out of sight at the default level.
func TestRedisLoggerQuietForClients(t *testing.T) {
	t.Parallel()
	var buf harness.LogBuffer
	l := redisLogger{log: slog.New(slog.NewJSONHandler(&buf, nil)), quiet: true}
	l.Printf(context.Background(), "redis: connection pool: %s", "failed to dial")
	if buf.String() != "" {
		t.Fatalf("a client command prints go-redis's message: %s", buf.String())
	}
	l.log = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l.Printf(context.Background(), "redis: connection pool: %s", "failed to dial")
	if !strings.Contains(buf.String(), `"level":"DEBUG"`) {
		t.Fatalf("with --log-level debug: %s", buf.String())
	}
}

// TestIsTerminal: /dev/null is a character device, not a terminal: no
// progress bar is drawn into it.
func TestIsTerminal(t *testing.T) {
	t.Parallel()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, _ := f.Stat(); st.Mode()&os.ModeCharDevice == 0 {
		t.Skip(os.DevNull + " is no character device here")
	}
	if isTerminal(f) {
		t.Fatal(os.DevNull + " counts as a terminal")
	}
	if isTerminal(&strings.Builder{}) {
		t.Fatal("a buffer counts as a terminal")
	}
}
