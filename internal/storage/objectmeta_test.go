package storage_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

const testSum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func sampleMeta() storage.ObjectMeta {
	return storage.ObjectMeta{
		Key: "cyoa/forêt/NODE_café.png", Type: "cyoa", Path: "forêt/NODE_café.png",
		SHA256: testSum, Size: 3000, ContentType: "image/png", Source: "cli",
		CreatedAt: time.Date(2026, 12, 1, 10, 11, 12, 123456789, time.UTC),
		Metadata:  map[string]string{"price": "10", "title": "Le café & la forêt = 100%", "note": " spaced "},
	}
}

func TestObjectMetaRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*storage.ObjectMeta)
	}{
		{"non-ASCII path and values", func(*storage.ObjectMeta) {}},
		{"no caller metadata", func(m *storage.ObjectMeta) { m.Metadata = map[string]string{} }},
		{"empty value", func(m *storage.ObjectMeta) { m.Metadata = map[string]string{"x": ""} }},
		{"empty file", func(m *storage.ObjectMeta) { m.Size = 0 }},
		{"no source", func(m *storage.ObjectMeta) { m.Source = "" }},
		{"whole second", func(m *storage.ObjectMeta) { m.CreatedAt = m.CreatedAt.Truncate(time.Second) }},
		{"control bytes and invalid UTF-8", func(m *storage.ObjectMeta) { m.Metadata = map[string]string{"raw": "a\x00\n\xff%41"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := sampleMeta()
			tt.edit(&m)
			md, err := storage.EncodeMetadata(m)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range md {
				if strings.ToLower(k) != k {
					t.Errorf("key %q is not lower-case", k)
				}
				for i := 0; i < len(v); i++ {
					if v[i] < '!' || v[i] > '~' {
						t.Errorf("%s = %q: byte 0x%02x is not printable ASCII", k, v, v[i])
					}
				}
			}
			got, err := storage.ParseMetadata(m.Key, m.ContentType, m.Size, md)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("parsed\n%+v\nwant\n%+v", got, m)
			}
		})
	}
}

func TestObjectMetaEncoding(t *testing.T) {
	t.Parallel()
	md, err := storage.EncodeMetadata(sampleMeta())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"sha256": testSum, "dab-v": "1", "dab-type": "cyoa", "dab-size": "3000", "dab-source": "cli",
		"dab-created": "2026-12-01T10:11:12.123456789Z",
		"dab-meta":    "note=%20spaced%20&price=10&title=Le%20caf%C3%A9%20%26%20la%20for%C3%AAt%20%3D%20100%25",
	}
	if !reflect.DeepEqual(md, want) {
		t.Fatalf("encoded\n%v\nwant\n%v", md, want)
	}
}

func TestParseMetadataRefuses(t *testing.T) {
	t.Parallel()
	good, err := storage.EncodeMetadata(sampleMeta())
	if err != nil {
		t.Fatal(err)
	}
	key := sampleMeta().Key
	tests := []struct {
		name   string
		key    string
		size   int64
		edit   func(map[string]string)
		want   error
		detail string
	}{
		{"not dab's", key, 3000, func(md map[string]string) { clear(md); md["sha256"] = testSum }, storage.ErrNoRecordMetadata, ""},
		{"other version", key, 3000, func(md map[string]string) { md["dab-v"] = "2" }, storage.ErrBadRecordMetadata, "version 1 only"},
		{"type of another key", "generic/x.png", 3000, func(map[string]string) {}, storage.ErrBadRecordMetadata, "does not start with its type"},
		{"bad type", key, 3000, func(md map[string]string) { md["dab-type"] = "CYOA" }, storage.ErrBadRecordMetadata, "dab-type"},
		{"traversal in key", "cyoa/../x.png", 3000, func(map[string]string) {}, storage.ErrBadRecordMetadata, "not one dab makes"},
		{"short sha256", key, 3000, func(md map[string]string) { md["sha256"] = "abc" }, storage.ErrBadRecordMetadata, "64 lower-case hex"},
		{"size mismatch", key, 2999, func(map[string]string) {}, storage.ErrBadRecordMetadata, "the object has 2999 bytes"},
		{"signed size", key, 3000, func(md map[string]string) { md["dab-size"] = "+3000" }, storage.ErrBadRecordMetadata, "plain digits"},
		{"bad time", key, 3000, func(md map[string]string) { md["dab-created"] = "yesterday" }, storage.ErrBadRecordMetadata, "dab-created"},
		{"bad escape", key, 3000, func(md map[string]string) { md["dab-meta"] = "price=1%G0" }, storage.ErrBadRecordMetadata, "bad %XX escape"},
		{"cut escape", key, 3000, func(md map[string]string) { md["dab-meta"] = "price=1%4" }, storage.ErrBadRecordMetadata, "ends inside"},
		{"needless escape", key, 3000, func(md map[string]string) { md["dab-meta"] = "price=%31" }, storage.ErrBadRecordMetadata, "written as itself"},
		{"reserved key", key, 3000, func(md map[string]string) { md["dab-meta"] = "owner=eve" }, storage.ErrBadRecordMetadata, "dab's own field"},
		{"duplicate key", key, 3000, func(md map[string]string) { md["dab-meta"] = "a=1&a=2" }, storage.ErrBadRecordMetadata, "twice"},
		{"no equals", key, 3000, func(md map[string]string) { md["dab-meta"] = "a" }, storage.ErrBadRecordMetadata, "not key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			md := map[string]string{}
			for k, v := range good {
				md[k] = v
			}
			tt.edit(md)
			_, err := storage.ParseMetadata(tt.key, "image/png", tt.size, md)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("err = %v, want %v with %q", err, tt.want, tt.detail)
			}
		})
	}
	// Keys come back from some stores capitalised (HTTP header case).
	md := map[string]string{}
	for k, v := range good {
		md[strings.ToUpper(k[:1])+k[1:]] = v
	}
	if _, err := storage.ParseMetadata(key, "image/png", 3000, md); err != nil {
		t.Fatalf("capitalised keys: %v", err)
	}
}

func TestMetadataFits(t *testing.T) {
	t.Parallel()
	// dab's own fields at their largest fit in the reserve.
	own, err := storage.EncodeMetadata(storage.ObjectMeta{
		Type: strings.Repeat("t", naming.MaxTypeLen), SHA256: testSum, Size: 1<<63 - 1,
		Source: strings.Repeat("s", 32), CreatedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := storage.MetadataBytes(own); n > storage.MetadataReservedBytes {
		t.Fatalf("dab's own fields take %d bytes, more than the %d reserved", n, storage.MetadataReservedBytes)
	}
	// The caller's budget: "dab-meta" + "k=" + value.
	fitting := storage.MetadataCallerBytesMax - len("dab-meta") - len("k=")
	for _, tt := range []struct {
		name string
		md   map[string]string
		ok   bool
	}{
		{"none", nil, true},
		{"exactly the limit", map[string]string{"k": strings.Repeat("v", fitting)}, true},
		{"one byte over", map[string]string{"k": strings.Repeat("v", fitting+1)}, false},
		{"non-ASCII counts three per byte", map[string]string{"k": strings.Repeat("é", fitting/6+1)}, false},
		{"many keys", func() map[string]string {
			md := map[string]string{}
			for i := 0; i < 200; i++ {
				md[strings.Repeat("k", 5)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "1"
			}
			return md
		}(), false},
	} {
		err := storage.MetadataFits(tt.md)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, storage.ErrMetadataTooLarge) || !strings.Contains(err.Error(), "2048 bytes (2 KB)")) {
			t.Errorf("%s: err = %v: want ErrMetadataTooLarge naming the limit", tt.name, err)
		}
		if tt.ok {
			m := sampleMeta()
			m.Source = strings.Repeat("s", 32)
			m.Metadata = tt.md
			full, err := storage.EncodeMetadata(m)
			if err != nil || storage.MetadataBytes(full) > storage.MetadataBytesMax {
				t.Errorf("%s: fits but encodes to %d bytes (%v)", tt.name, storage.MetadataBytes(full), err)
			}
		}
	}
	if _, err := storage.EncodeMetadata(storage.ObjectMeta{Type: "generic", SHA256: testSum, Metadata: map[string]string{"k": strings.Repeat("v", fitting+1)}}); !errors.Is(err, storage.ErrMetadataTooLarge) {
		t.Fatalf("EncodeMetadata of too much: %v", err)
	}
}

// FuzzParseMetadata: object metadata comes from whoever may write to the
// bucket. Parsing never panics, and what it accepts encodes back to the
// same record.
func FuzzParseMetadata(f *testing.F) {
	good, _ := storage.EncodeMetadata(sampleMeta())
	f.Add("cyoa/forêt/NODE_café.png", good["dab-type"], good["sha256"], good["dab-size"], good["dab-source"], good["dab-created"], good["dab-meta"], int64(3000))
	f.Add("generic/a", "generic", testSum, "0", "http", "2026-01-01T00:00:00.000000000Z", "", int64(0))
	f.Add("generic/a", "generic", testSum, "1", "%", "x", "a=%&b", int64(1))
	f.Fuzz(func(t *testing.T, key, typ, sum, size, source, created, caller string, length int64) {
		md := map[string]string{"dab-v": "1", "dab-type": typ, "sha256": sum, "dab-size": size,
			"dab-source": source, "dab-created": created, "dab-meta": caller}
		m, err := storage.ParseMetadata(key, "application/octet-stream", length, md)
		if err != nil {
			if !errors.Is(err, storage.ErrBadRecordMetadata) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if m.Key != key || m.Type+"/"+m.Path != key || m.Size != length {
			t.Fatalf("parsed %+v from key %q", m, key)
		}
		if storage.MetadataFits(m.Metadata) != nil {
			return // accepted from a bucket, though an intake would refuse it
		}
		again, err := storage.EncodeMetadata(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		back, err := storage.ParseMetadata(key, "application/octet-stream", length, again)
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, m)
		}
	})
}

// TestObjectMetaOnTheStore: the metadata survives a real S3-compatible
// store (headers, case, non-ASCII values), List pages through the bucket
// and Head reports a missing object as ErrNotFound.
func TestObjectMetaOnTheStore(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	st := storagetest.Store(t, srv)
	st.SetListPageSize(2)
	ctx := context.Background()
	var want []storage.ObjectMeta
	for _, p := range []string{"forêt/NODE_café.png", "a.txt", "b/c.txt"} {
		f, sum := storage.WriteTestFile(t, 100)
		m := sampleMeta()
		m.Type, m.Path, m.Key, m.SHA256, m.Size = "generic", p, "generic/"+p, sum, 100
		md, err := storage.EncodeMetadata(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, storage.PutInput{Key: m.Key, File: f, Size: 100, SHA256: sum, ContentType: m.ContentType, Metadata: md}); err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	var keys []string
	if err := st.List(ctx, "generic/", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("listed %q", keys)
	}
	for _, m := range want {
		o, err := st.Head(ctx, m.Key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := o.RecordMeta()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("read back\n%+v\nwant\n%+v", got, m)
		}
	}
	if _, err := st.Head(ctx, "generic/missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("head of a missing object: %v", err)
	}
}
