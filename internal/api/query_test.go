package api

import (
	"fmt"
	"testing"

	"github.com/hibiken/asynq"
)

// TestTaskFromInfo: attempts count every run, including the one that
// failed for good (asynq archives without counting it), and the last error
// reads without asynq's "skip retry" ending.
func TestTaskFromInfo(t *testing.T) {
	t.Parallel()
	final := fmt.Errorf("upload: bad name; fix it and re-run the task: %w", asynq.SkipRetry).Error()
	tests := []struct {
		name     string
		info     asynq.TaskInfo
		attempts int
		state    string
		lastErr  string
	}{
		{"pending", asynq.TaskInfo{State: asynq.TaskStatePending}, 0, "pending", ""},
		{"running", asynq.TaskInfo{State: asynq.TaskStateActive}, 1, "active", ""},
		{"done first time", asynq.TaskInfo{State: asynq.TaskStateCompleted}, 1, "completed", ""},
		{"done after 2 failures", asynq.TaskInfo{State: asynq.TaskStateCompleted, Retried: 2, LastErr: "timeout"}, 3, "completed", "timeout"},
		{"waiting to retry", asynq.TaskInfo{State: asynq.TaskStateRetry, Retried: 1, LastErr: "timeout"}, 1, "retry", "timeout"},
		{"given up at once", asynq.TaskInfo{State: asynq.TaskStateArchived, LastErr: final}, 1, "archived", "upload: bad name; fix it and re-run the task"},
		{"retries exhausted", asynq.TaskInfo{State: asynq.TaskStateArchived, Retried: 25, MaxRetry: 25, LastErr: "timeout"}, 26, "archived", "timeout"},
		{"archived before it ran", asynq.TaskInfo{State: asynq.TaskStateArchived}, 0, "archived", ""},
	}
	for _, tt := range tests {
		got := TaskFromInfo(&tt.info, TaskFacts{})
		if got.Attempts != tt.attempts || got.State != tt.state || got.LastError != tt.lastErr {
			t.Errorf("%s: attempts %d, state %s, last error %q; want %d, %s, %q", tt.name, got.Attempts, got.State, got.LastError, tt.attempts, tt.state, tt.lastErr)
		}
	}
}

// TestHidePaths: absolute server paths in a task's error keep only their
// file name for readers that are not admins; the rest of the text stays.
func TestHidePaths(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"upload: conflict; the file is now /var/lib/dab/failed/generic/x.bin, with x.bin.error.json beside it": "upload: conflict; the file is now …/x.bin, with x.bin.error.json beside it",
		"spool entry 0123 is not in /data/spool: upload the file again":                                        "spool entry 0123 is not in …/spool: upload the file again",
		"open /tmp/a b: no such file":              "open …/a b: no such file",
		"s3://bucket/generic/x.bin: AccessDenied":  "s3://bucket/generic/x.bin: AccessDenied",
		"https://example.com/a/b.png answered 404": "https://example.com/a/b.png answered 404",
		"": "",
	} {
		if got := HidePaths(in); got != want {
			t.Errorf("HidePaths(%q) = %q, want %q", in, got, want)
		}
	}
}
