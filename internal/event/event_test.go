package event_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/harness"
)

func setup(t *testing.T) (*redis.Client, *event.Log, *event.Writer) {
	t.Helper()
	rdb := harness.RedisClient(t, harness.Redis(t))
	return rdb, event.NewLog(rdb, "t:"), event.NewWriter(rdb, "t:", event.Trim{})
}

// add appends an event as the scripts do.
func add(t *testing.T, rdb *redis.Client, typ, accounts string, n int) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: event.Keys{Prefix: "t:"}.Stream(), Values: []any{
		event.FieldType, typ, event.FieldTime, time.Now().UTC().Format(time.RFC3339Nano),
		event.FieldData, fmt.Sprintf(`{"n": %d}`, n), event.FieldAccounts, accounts}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func failure(task, code string) event.UploadFailure {
	return event.UploadFailure{TaskID: task, SpoolID: "s", Code: code, Reason: "it broke", Fix: "fix it", Remedy: "rerun", Type: "generic", Key: "generic/a", Name: "a"}
}

// TestUploadFailedOncePerFailure: the same task and failure code write one
// event however often they are reported; another code or task is another
// failure.
func TestUploadFailedOncePerFailure(t *testing.T) {
	t.Parallel()
	rdb, log, w := setup(t)
	ctx := context.Background()
	first, written, err := w.UploadFailed(ctx, failure("upload-1", "AccessDenied"))
	if err != nil || !written {
		t.Fatalf("first report: %v %v", written, err)
	}
	for range 3 {
		id, written, err := w.UploadFailed(ctx, failure("upload-1", "AccessDenied"))
		if err != nil || written || id != first {
			t.Fatalf("repeat: %s %v %v, want %s not written", id, written, err, first)
		}
	}
	for _, f := range []event.UploadFailure{failure("upload-1", "NoSuchBucket"), failure("upload-2", "AccessDenied")} {
		if _, written, err := w.UploadFailed(ctx, f); err != nil || !written {
			t.Fatalf("%s %s: %v %v", f.TaskID, f.Code, written, err)
		}
	}
	if n, _ := rdb.XLen(ctx, log.Keys().Stream()).Result(); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
	e, err := log.Get(ctx, first)
	if err != nil || e.Type != event.TypeUploadFailed || !strings.Contains(string(e.Data), `"reason":"it broke"`) || !strings.Contains(string(e.Data), `"fix":"fix it"`) {
		t.Fatalf("event %+v %s: %v", e, e.Data, err)
	}
	if _, _, err := w.UploadFailed(ctx, event.UploadFailure{TaskID: "upload-3"}); err == nil {
		t.Fatal("a failure without a code was written")
	}
}

// TestReadPages: pages follow each other by next without a gap or a
// repeat; an account sees only its own events, within a bounded scan.
func TestReadPages(t *testing.T) {
	t.Parallel()
	rdb, log, _ := setup(t)
	ctx := context.Background()
	var all, alice []string
	for i := range 250 {
		accounts := "bob"
		if i%10 == 3 {
			accounts = "alice house"
		}
		id := add(t, rdb, event.TypeCreditsGranted, accounts, i)
		all = append(all, id)
		if accounts != "bob" {
			alice = append(alice, id)
		}
	}
	read := func(o event.ReadOptions) []string {
		var got []string
		for pages := 0; ; pages++ {
			p, err := log.Read(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Events {
				got = append(got, e.ID)
			}
			if p.Next == o.After {
				return got
			}
			if len(p.Events) > 0 && p.Next != p.Events[len(p.Events)-1].ID && o.Account == "" {
				t.Fatalf("next %s is not the last event %s", p.Next, p.Events[len(p.Events)-1].ID)
			}
			o.After = p.Next
			if pages > 1000 {
				t.Fatal("no end")
			}
		}
	}
	tests := []struct {
		name string
		o    event.ReadOptions
		want []string
	}{
		{"default page", event.ReadOptions{}, all},
		{"pages of 7", event.ReadOptions{Limit: 7}, all},
		{"after the 100th", event.ReadOptions{After: all[99], Limit: 1000}, all[100:]},
		{"after the last", event.ReadOptions{After: all[249]}, nil},
		{"alice, pages of 4", event.ReadOptions{Account: "alice", Limit: 4}, alice},
		{"house", event.ReadOptions{Account: "house", Limit: 1000}, alice},
		{"nobody", event.ReadOptions{Account: "mallory"}, nil},
	}
	for _, tt := range tests {
		if got := read(tt.o); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%s: %d events, want %d", tt.name, len(got), len(tt.want))
		}
	}
	for _, bad := range []string{"x", "1-", "-1", "1-2-3", "(1", strings.Repeat("9", 30)} {
		if _, err := log.Read(ctx, event.ReadOptions{After: bad}); !errors.Is(err, event.ErrBadCursor) {
			t.Errorf("after %q: %v, want ErrBadCursor", bad, err)
		}
	}
	if p, err := log.Read(ctx, event.ReadOptions{Limit: 5000}); err != nil || len(p.Events) != 250 {
		t.Fatalf("a limit over the maximum: %d events, %v", len(p.Events), err)
	}
	if _, err := log.Get(ctx, "1-1"); !errors.Is(err, event.ErrNotFound) {
		t.Fatalf("get of a missing event: %v", err)
	}
}

// TestReadScansBounded: a reader bound to an account whose events are far
// apart gets empty pages whose next moves on by at most event.ScanMax
// entries, so no request reads the whole stream, and it still finds them.
func TestReadScansBounded(t *testing.T) {
	t.Parallel()
	rdb, log, _ := setup(t)
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for i := range 2*event.ScanMax + 10 {
		accounts := "bob"
		if i == event.ScanMax+5 {
			accounts = "alice"
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: log.Keys().Stream(), Values: []any{"type", "credits.granted", "time", "2026-01-01T00:00:00Z", "data", "{}", "accounts", accounts}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	o := event.ReadOptions{Account: "alice"}
	var found, pages int
	for ; pages < 10; pages++ {
		p, err := log.Read(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		found += len(p.Events)
		if p.Next == o.After {
			break
		}
		o.After = p.Next
	}
	if found != 1 || pages != 3 {
		t.Fatalf("found %d events in %d pages, want 1 in 3", found, pages)
	}
}

// TestTrim: the stream keeps about MaxLen events (approximately: whole
// nodes of 100) and, with MaxAge, drops older ones.
func TestTrim(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		trim     event.Trim
		old, new int
		min, max int64
	}{
		{"by length", event.Trim{MaxLen: event.MaxLenMin}, 0, 1500, event.MaxLenMin, event.MaxLenMin + 100},
		{"by age", event.Trim{MaxAge: time.Hour}, 350, 1, 1, 101},
		{"neither", event.Trim{}, 350, 10, 360, 360},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rdb := harness.RedisClient(t, harness.Redis(t))
			ctx := context.Background()
			keys := event.Keys{Prefix: "t:"}
			// Events of two hours ago, with the IDs Redis gave them then.
			old := time.Now().Add(-2 * time.Hour).UnixMilli()
			for i := range tt.old {
				if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Stream(), ID: fmt.Sprintf("%d-%d", old, i+1),
					Values: []any{"type", "credits.granted", "time", "2026-01-01T00:00:00Z", "data", "{}", "accounts", ""}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			w := event.NewWriter(rdb, "t:", tt.trim)
			for i := range tt.new {
				if _, _, err := w.UploadFailed(ctx, failure(fmt.Sprint("upload-", i), "X")); err != nil {
					t.Fatal(err)
				}
			}
			n, err := rdb.XLen(ctx, keys.Stream()).Result()
			if err != nil || n < tt.min || n > tt.max {
				t.Fatalf("%d events left (%v), want %d to %d", n, err, tt.min, tt.max)
			}
		})
	}
}

func TestTrimArgs(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_767_225_600_000)
	tests := []struct {
		trim   event.Trim
		maxLen int
		minID  string
	}{
		{event.Trim{}, event.MaxLenDefault, "0"},
		{event.Trim{MaxLen: 5000, MaxAge: time.Minute}, 5000, "1767225540000-0"},
	}
	for _, tt := range tests {
		if n, id := tt.trim.Args(now); n != tt.maxLen || id != tt.minID {
			t.Errorf("%+v: %d %s, want %d %s", tt.trim, n, id, tt.maxLen, tt.minID)
		}
	}
}
