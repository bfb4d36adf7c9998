package task

import (
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/spool"
)

const goodID = "019ad5f0c2a1b2c3d4e5f6a7b8c9"

func TestNewUploadIsDeterministic(t *testing.T) {
	t.Parallel()
	id := goodID
	a, err := NewUpload(UploadPayload{SpoolID: id, Type: "cyoa", Key: "cyoa/NODE_a.png"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Type() != TypeUpload {
		t.Fatalf("type = %q", a.Type())
	}
	p, err := DecodeUpload(a.Payload())
	if err != nil || p.SpoolID != id || p.Key != "cyoa/NODE_a.png" {
		t.Fatalf("round trip = %+v, %v", p, err)
	}
	if UploadTaskID(id) != "upload-"+id {
		t.Fatalf("task id = %q", UploadTaskID(id))
	}
}

func TestDecodeUploadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, payload, want string
	}{
		{"not json", `nope`, "not the JSON object"},
		{"array", `[1]`, "not the JSON object"},
		{"no id", `{}`, "no spool_id"},
		{"traversal", `{"spool_id":"../../etc"}`, "not a spool entry ID"},
		{"upper", `{"spool_id":"019AD5F0C2A1B2C3D4E5F6A7B8C9"}`, "not a spool entry ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeUpload([]byte(tt.payload))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, ErrBadPayload) {
				t.Fatalf("err = %v does not wrap SkipRetry and ErrBadPayload", err)
			}
		})
	}
}

func FuzzDecodeUpload(f *testing.F) {
	f.Add([]byte(`{"spool_id":"019ad5f0c2a1b2c3d4e5f6a7b8c9"}`))
	f.Add([]byte(`{"spool_id":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeUpload(b)
		if err != nil {
			if !errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("decode error %v is retryable", err)
			}
			return
		}
		if !spool.ValidID(p.SpoolID) {
			t.Fatalf("accepted bad spool id %q", p.SpoolID)
		}
	})
}

func TestPurchaseTask(t *testing.T) {
	t.Parallel()
	tk, err := NewPurchase(PurchasePayload{PurchaseID: "p1", AssetID: "a", BuyerID: "b", Credits: 3})
	if err != nil || tk.Type() != TypePurchase {
		t.Fatal(err)
	}
	p, err := DecodePurchase(tk.Payload())
	if err != nil || p.Credits != 3 || PurchaseTaskID("p1") != "purchase-p1" {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{`x`, `{}`, `{"purchase_id":"p","asset_id":"a","buyer_id":"b","credits":-1}`, `{"credits":"1"}`} {
		if _, err := DecodePurchase([]byte(bad)); !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func FuzzDecodePurchase(f *testing.F) {
	f.Add([]byte(`{"purchase_id":"p","asset_id":"a","buyer_id":"b","credits":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePurchase(b)
		if err == nil && p.Credits < 0 {
			t.Fatalf("accepted %+v", p)
		}
	})
}

// TestUploadResultJSON: the result's JSON names are permanent (clients and
// the HTTP API read them).
func TestUploadResultJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(UploadResult{AssetID: "a1", Bucket: "b", Key: "cyoa/NODE_a.png", SHA256: "ff", Existed: true})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"asset_id":"a1","s3_bucket":"b","s3_key":"cyoa/NODE_a.png","sha256":"ff","existed":true}`
	if string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
}

// FuzzDecodeImport: any payload decodes or is refused with ErrBadPayload
// (never quoting a URL's password); what decodes makes a valid object key
// and a task ID of fixed form, an s3:// source has a valid bucket and no
// dot segment, and a URL has a host and no user info.
func FuzzDecodeImport(f *testing.F) {
	f.Add([]byte(`{"key":"k","source":"s3://b/k","type":"generic","path":"a/b.png"}`))
	f.Add([]byte(`{"key":"k","source":"https://example.com/x","type":"cyoa","path":"../x","sha256":"00"}`))
	f.Add([]byte(`{"key":"k","source":"https://u:hunter2@exa mple.com/x","type":"generic","path":"x"}`))
	f.Add([]byte(`{"key":"k","source":"s3://bkt/a/../b","type":"generic","path":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeImport(b)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error without ErrBadPayload: %v", err)
			}
			if strings.Contains(string(b), "hunter2") && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error quotes the password: %v", err)
			}
			return
		}
		if bucket, key, err := SplitS3(p.Source); err == nil {
			if naming.ValidateBucket(bucket) != nil || slices.Contains(strings.Split(key, "/"), "..") || slices.Contains(strings.Split(key, "/"), ".") {
				t.Fatalf("accepted source %q", p.Source)
			}
			if (S3Sources{Buckets: []string{"*"}, Own: bucket}).Check(p.Source) == nil {
				t.Fatalf("%q: dab's own bucket allowed", p.Source)
			}
		} else if u, err := url.Parse(p.Source); err != nil || u.User != nil || u.Hostname() == "" {
			t.Fatalf("accepted URL %q", p.Source)
		}
		if _, err := NewImport(p); err != nil {
			t.Fatalf("decoded but not buildable: %v", err)
		}
		if id := ImportTaskID(p.Key); len(id) != len("import-")+32 {
			t.Fatalf("task ID %q", id)
		}
	})
}

func TestWebhookTask(t *testing.T) {
	t.Parallel()
	ev := json.RawMessage(`{"id":"1767225600000-0","type":"credits.granted","time":"2026-01-01T00:00:00Z","data":{"account":"a","credits":5}}`)
	tk, err := NewWebhook(WebhookPayload{Endpoint: "0123456789abcdef", Event: ev})
	if err != nil || tk.Type() != TypeWebhook {
		t.Fatalf("NewWebhook: %v", err)
	}
	p, id, typ, err := DecodeWebhook(tk.Payload())
	if err != nil || id != "1767225600000-0" || typ != "credits.granted" || p.Endpoint != "0123456789abcdef" || string(p.Event) != string(ev) {
		t.Fatalf("round trip: %+v %s %s %v", p, id, typ, err)
	}
	if WebhookTaskID(id, p.Endpoint) != "webhook-1767225600000-0-0123456789abcdef" {
		t.Fatalf("task ID %s", WebhookTaskID(id, p.Endpoint))
	}
	for _, bad := range []string{`{}`, `{"endpoint": "e"}`, `{"endpoint": "e", "event": {"id": "1-0"}}`, `{"endpoint": "e", "event": "x"}`, `[`} {
		if _, _, _, err := DecodeWebhook([]byte(bad)); !errors.Is(err, ErrBadPayload) || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("DecodeWebhook(%s) = %v, want ErrBadPayload", bad, err)
		}
	}
	if _, err := NewWebhook(WebhookPayload{Endpoint: "e"}); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("a delivery without an event: %v", err)
	}
}

// TestS3SourcesCheck: which buckets an s3:// import may read. dab's own
// bucket never; "*" any bucket but an access point alias, which may stand
// for dab's own and must be named.
func TestS3SourcesCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		buckets []string
		source  string
		ok      bool
	}{
		{nil, "s3://partner/a.png", false},
		{[]string{"partner"}, "s3://partner/a.png", true},
		{[]string{"partner"}, "s3://other/a.png", false},
		{[]string{"*"}, "s3://other/a.png", true},
		{[]string{"*"}, "s3://dab-assets/a.png", false}, // dab's own
		{[]string{"dab-assets"}, "s3://dab-assets/a.png", false},
		{[]string{"*"}, "s3://my-ap-hrzrlukc5m36ft7okagglf3gmwluquse1b-s3alias/a.png", false},
		{[]string{"*"}, "s3://my-ap-123456789012--op-s3/a.png", false},
		{[]string{"*"}, "s3://my-olap-abcdefghijklmnopqrstuvwxyz1234--ol-s3/a.png", false},
		{[]string{"*", "my-ap-hrzrlukc5m36ft7okagglf3gmwluquse1b-s3alias"}, "s3://my-ap-hrzrlukc5m36ft7okagglf3gmwluquse1b-s3alias/a.png", true},
		{nil, "https://example.com/a.png", true}, // the URL guard's to check
	}
	for _, tt := range tests {
		err := S3Sources{Buckets: tt.buckets, Own: "dab-assets"}.Check(tt.source)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrSourceRefused) {
			t.Errorf("%v allows %s: %v, want ok=%v", tt.buckets, tt.source, err, tt.ok)
		}
	}
}
