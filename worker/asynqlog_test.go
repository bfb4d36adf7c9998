package worker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
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

// TestIdleCheck: only the first fetcher of uploads and purchases looks at
// its empty queue ten times a second; the rest nap asynq's second.
func TestIdleCheck(t *testing.T) {
	t.Parallel()
	perSecond := 0.0
	for _, q := range Queues("uploads:host-1") {
		for i := range FetchersDefault {
			perSecond += float64(time.Second) / float64(idleCheck(q, i))
		}
	}
	if perSecond != 34 {
		t.Fatalf("an idle worker looks %v times a second, want 34", perSecond)
	}
	for _, q := range []string{"uploads:host-1", "purchases"} {
		if idleCheck(q, 0) != 100*time.Millisecond {
			t.Errorf("%s's first fetcher naps %v, want 100ms", q, idleCheck(q, 0))
		}
	}
}
