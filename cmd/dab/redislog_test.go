package main

import (
	"context"
	"log/slog"
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
