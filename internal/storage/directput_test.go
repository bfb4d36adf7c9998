package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/internal/storage/storagetest"
)

// putRecorder counts the PUT requests a client sends: through the SDK
// (which names the operation in the query, x-id=PutObject) or direct.
type putRecorder struct {
	next         aws.HTTPClient
	mu           sync.Mutex
	sdk, direct  int
	statusDirect []int
}

func (r *putRecorder) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.next.Do(req)
	if req.Method == http.MethodPut {
		r.mu.Lock()
		if req.URL.Query().Get("x-id") == "PutObject" {
			r.sdk++
		} else {
			r.direct++
			if err == nil {
				r.statusDirect = append(r.statusDirect, resp.StatusCode)
			}
		}
		r.mu.Unlock()
	}
	return resp, err
}

func (r *putRecorder) counts() (sdk, direct int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sdk, r.direct
}

// recordedStore is a store on srv whose client's PUTs are counted.
func recordedStore(t *testing.T, c storage.Options) (*storage.Store, *putRecorder) {
	t.Helper()
	base := storagetest.Client(t, c)
	rec := &putRecorder{next: base.Options().HTTPClient}
	client := s3.New(base.Options(), func(o *s3.Options) { o.HTTPClient = rec })
	return storage.New(client, c), rec
}

// TestDirectPut: small objects go up without the SDK's pipeline, under
// every kind of key the spool allows, as the SDK would store them: the same
// bytes, metadata and checksum check; a re-run is Existed, other content a
// conflict. Larger objects, and every answer but a success or a 412, go
// through the SDK.
func TestDirectPut(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	for _, tt := range []struct {
		name, key string
		size      int
		checksum  string
		direct    bool
	}{
		{"plain", "generic/a.bin", 4096, storage.ChecksumSHA256, true},
		{"empty", "generic/empty.bin", 0, storage.ChecksumSHA256, true},
		{"checksum off", "generic/off.bin", 100, storage.ChecksumOff, true},
		{"spaces and unicode", "cyoa/forêt sombre/NODE_café (1).png", 10, storage.ChecksumSHA256, true},
		{"reserved characters", "generic/a+b=c&d;e,f'g!h$i*j@k~l%41.txt", 10, storage.ChecksumSHA256, true},
		{"largest sent from memory", "generic/mem.bin", storage.DirectPutInMemoryMax, storage.ChecksumSHA256, true},
		{"smallest sent from the file", "generic/file.bin", storage.DirectPutInMemoryMax + 1, storage.ChecksumSHA256, true},
		{"largest direct", "generic/max.bin", storage.DirectPutMax, storage.ChecksumSHA256, true},
		{"over the limit", "generic/over.bin", storage.DirectPutMax + 1, storage.ChecksumSHA256, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := storagetest.Options(srv)
			c.ChecksumMode = tt.checksum
			st, rec := recordedStore(t, c)
			f, sum := storage.WriteTestFile(t, tt.size)
			in := storage.PutInput{Key: tt.key, File: f, Size: int64(tt.size), SHA256: sum, ContentType: "image/png",
				Metadata: map[string]string{"dab-type": "generic"}}
			res, err := st.Put(context.Background(), in)
			if err != nil || res.Existed || res.ETag == "" {
				t.Fatalf("put = %+v, %v", res, err)
			}
			sdk, direct := rec.counts()
			if tt.direct && (sdk != 0 || direct != 1) || !tt.direct && (sdk != 1 || direct != 0) {
				t.Fatalf("PUTs through the SDK %d, direct %d; want direct=%v", sdk, direct, tt.direct)
			}
			got := readBack(t, st, tt.key)
			if s := sha256.Sum256(got); len(got) != tt.size || hex.EncodeToString(s[:]) != sum {
				t.Fatalf("read back %d bytes, want %d with sha256 %s", len(got), tt.size, sum)
			}
			meta, err := st.Head(context.Background(), tt.key)
			if err != nil || meta.ContentType != "image/png" || meta.Metadata[storage.MetaSHA256] != sum || meta.Metadata["dab-type"] != "generic" {
				t.Fatalf("head = %+v, %v; want the content type and metadata sent", meta, err)
			}
			// A re-run: the conditional PUT's 412, then the object compared.
			res, err = st.Put(context.Background(), in)
			if err != nil || !res.Existed {
				t.Fatalf("second put = %+v, %v; want Existed", res, err)
			}
			other, otherSum := storage.WriteTestFile(t, tt.size+1)
			_, err = st.Put(context.Background(), storage.PutInput{Key: tt.key, File: other, Size: int64(tt.size + 1), SHA256: otherSum})
			if !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("other content under the key: err = %v, want ErrConflict", err)
			}
		})
	}
}

// TestDirectPutFallsBackToTheSDK: an answer the direct PUT does not judge
// (a refused signature, bytes that do not match their checksum) is sent
// again through the SDK, whose error dab reports.
func TestDirectPutFallsBackToTheSDK(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	c := storagetest.Options(srv)
	c.SecretAccessKey = "wrong-secret"
	st, rec := recordedStore(t, c)
	f, sum := storage.WriteTestFile(t, 10)
	_, err := st.Put(context.Background(), storage.PutInput{Key: "generic/x", File: f, Size: 10, SHA256: sum})
	var se *storage.Error
	if !errors.As(err, &se) || !se.Permanent || se.Code != "SignatureDoesNotMatch" || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") {
		t.Fatalf("err = %v, want the SDK's permanent SignatureDoesNotMatch", err)
	}
	if sdk, direct := rec.counts(); direct != 1 || sdk == 0 {
		t.Fatalf("PUTs through the SDK %d, direct %d; want one direct, then the SDK", sdk, direct)
	}

	st, rec = recordedStore(t, storagetest.Options(srv))
	_, otherSum := storage.WriteTestFile(t, 10)
	_, err = st.Put(context.Background(), storage.PutInput{Key: "generic/changed", File: f, Size: 10, SHA256: otherSum})
	if err == nil {
		t.Fatal("put with a wrong checksum succeeded")
	}
	if sdk, direct := rec.counts(); direct != 1 || sdk == 0 || rec.statusDirect[0] == http.StatusOK {
		t.Fatalf("PUTs through the SDK %d, direct %d (answers %v); want a refused direct PUT, then the SDK", sdk, direct, rec.statusDirect)
	}
	if _, _, err := st.Get(context.Background(), "generic/changed"); err == nil {
		t.Fatal("the store kept an object whose checksum did not match")
	}
}

// TestDirectPutOfAShortFile: a small file that has fewer bytes than the
// size it was given (it shrank after its claim) is not sent from memory:
// the read comes up short, the SDK's PUT refuses it too, and no object is
// stored under the key.
func TestDirectPutOfAShortFile(t *testing.T) {
	t.Parallel()
	srv := harness.StartS3(t)
	st, rec := recordedStore(t, storagetest.Options(srv))
	f, sum := storage.WriteTestFile(t, 100)
	_, err := st.Put(context.Background(), storage.PutInput{Key: "generic/short", File: f, Size: 200, SHA256: sum})
	if err == nil {
		t.Fatal("a put of 200 bytes from a file of 100 succeeded")
	}
	if sdk, direct := rec.counts(); direct != 0 || sdk == 0 {
		t.Fatalf("PUTs through the SDK %d, direct %d; want none direct (the read came up short), then the SDK", sdk, direct)
	}
	if _, _, err := st.Get(context.Background(), "generic/short"); err == nil {
		t.Fatal("the store kept an object from a file shorter than its size")
	}
}

// resettingStore is a store that holds the object already and breaks
// every PUT's connection while the body comes in, with no answer: as a
// store that answers a conditional PUT of a key it holds (412) before it
// reads the body and resets the connection leaves the client (it fails
// writing the body and never reads the answer; versitygw may do this).
// HEAD describes the object it holds.
func resettingStore(t *testing.T, size int64, sha string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodHead:
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.Header().Set("X-Amz-Meta-"+storage.MetaSHA256, sha)
			w.Header().Set("ETag", `"held"`)
			w.WriteHeader(http.StatusOK)
		case http.MethodPut:
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			io.CopyN(io.Discard, buf, 64<<10) // the client is writing the body now
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset, not a polite close
			}
			conn.Close()
		default:
			http.Error(w, "unexpected", http.StatusMethodNotAllowed)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestPutWithoutAnswerLooksAtTheObject: a re-run of a file whose object
// is there, whose PUT gets no answer (the store broke the connection while
// the body came in), is an idempotent success: Put looks at the object
// instead of failing (or retrying) a PUT it never got an answer to.
// Directly and through the SDK.
func TestPutWithoutAnswerLooksAtTheObject(t *testing.T) {
	t.Parallel()
	for _, size := range []int{storage.DirectPutMax, 3 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			f, sum := storage.WriteTestFile(t, size)
			c := storage.Options{Bucket: "held", Region: "us-east-1", Endpoint: resettingStore(t, int64(size), sum), PathStyle: true,
				AccessKeyID: "k", SecretAccessKey: "s", ChecksumMode: storage.ChecksumSHA256}
			st := storage.New(storagetest.Client(t, c), c)
			res, err := st.Put(context.Background(), storage.PutInput{Key: "generic/held.bin", File: f, Size: int64(size), SHA256: sum})
			if err != nil || !res.Existed {
				t.Fatalf("put = %+v, %v; want Existed", res, err)
			}
		})
	}
}
