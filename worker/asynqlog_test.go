package worker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestAsynqLogger: asynq's start and stop chatter and its line for every
// archived task stay out of an Info log; a task handed back to its queue
// at a stop, warnings and errors stay in.
func TestAsynqLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := asynqLogger{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Info("Starting processing")
	l.Info("Send signal TSTP to stop processing new tasks")
	l.Info("Exiting")
	l.Warn("Retry exhausted for task id=x")
	l.Info("Pushed task id=kept back to queue")
	l.Warn("a warning")
	l.Error("an error")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "Pushed task id=kept") || !strings.Contains(lines[1], "a warning") || !strings.Contains(lines[2], "an error") {
		t.Fatalf("logged:\n%s", buf.String())
	}
}
