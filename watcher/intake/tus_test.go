package intake

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tusRequest sends a tus request to rawPath exactly as written (escapes
// and all, as curl --path-as-is does).
func (h *httpBundle) tusRequest(t *testing.T, method, rawPath string, body io.Reader, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = rawPath // sent byte for byte, never re-escaped or cleaned
	req.Header.Set("Authorization", "Bearer "+testIngest)
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// createTus starts a resumable upload of size bytes and returns its ID.
func (h *httpBundle) createTus(t *testing.T, name string, size int) string {
	t.Helper()
	a := h.tusRequest(t, "POST", tusBase, nil, map[string]string{
		"Upload-Length": itoa(size), "Upload-Metadata": "filename " + b64(name),
	})
	loc := a.Header.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	if a.Status != http.StatusCreated || !validTusID(id) {
		t.Fatalf("create: %d %q %s", a.Status, loc, a.Body)
	}
	return id
}

// TestTusIDsCannotLeaveTheFolder is the regression test for upload IDs that
// name files outside the tus folder (..%2F and friends): every verb, and a
// POST that asks for another method, is refused before tusd sees it, and
// the files outside are untouched.
func TestTusIDsCannotLeaveTheFolder(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	tusDir := h.intake.cfg.TusDir
	outside := filepath.Dir(filepath.Dir(tusDir)) // two levels above the tus folder
	victim := filepath.Join(outside, "victim")
	const victimBytes = "victim's own bytes\n"
	os.WriteFile(victim, []byte(victimBytes), 0o600)
	// A .info that tusd's file store would read as an upload of the victim.
	info, _ := json.Marshal(map[string]any{"ID": "victim", "Size": 1000, "Offset": len(victimBytes),
		"MetaData": map[string]string{"filename": "x.bin"},
		"Storage":  map[string]string{"Type": "filestore", "Path": victim, "InfoPath": victim + ".info"}})
	os.WriteFile(victim+".info", info, 0o600)

	ids := []string{
		"..%2F..%2Fvictim", "%2e%2e%2f%2e%2e%2fvictim", "%2E%2E%2F%2E%2E%2Fvictim", "..%252F..%252Fvictim",
		"..%5C..%5Cvictim", strings.ReplaceAll(victim, "/", "%2F"), strings.Repeat("A", tusIDLen),
		strings.Repeat("a", tusIDLen-1), strings.Repeat("a", tusIDLen+1), strings.Repeat("a", tusIDLen) + "%2F",
		strings.Repeat("a", tusIDLen) + ".info", "%00" + strings.Repeat("a", tusIDLen-1),
	}
	offset := map[string]string{"Upload-Offset": itoa(len(victimBytes)), "Content-Type": "application/offset+octet-stream"}
	for _, id := range ids {
		for _, tt := range []struct {
			method string
			hdr    map[string]string
			want   int
		}{
			{"HEAD", nil, 404},
			{"PATCH", offset, 404},
			{"DELETE", nil, 404},
			{"POST", map[string]string{"X-HTTP-Method-Override": "DELETE"}, 0},
			{"POST", map[string]string{"X-HTTP-Method-Override": "PATCH", "Upload-Offset": offset["Upload-Offset"], "Content-Type": offset["Content-Type"]}, 0},
			{"OPTIONS", nil, 404},
		} {
			a := h.tusRequest(t, tt.method, tusBase+id, strings.NewReader("admin STOLEN-TOKEN\n"), tt.hdr)
			if tt.want != 0 && a.Status != tt.want || tt.want == 0 && (a.Status < 400 || a.Status >= 500) {
				t.Errorf("%s %s%s: %d %s", tt.method, tusBase, id, a.Status, a.Body)
			}
		}
	}
	// A method override on the creation URL itself is refused too.
	if a := h.tusRequest(t, "POST", tusBase, nil, map[string]string{"X-HTTP-Method-Override": "DELETE"}); a.Status != 400 || a.ErrorCode() != "method_override" {
		t.Errorf("override on %s: %d %s", tusBase, a.Status, a.Body)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != victimBytes {
		t.Fatalf("the file outside the tus folder was touched: %q, %v", b, err)
	}
	if _, err := os.Stat(victim + ".info"); err != nil {
		t.Fatalf("the .info outside the tus folder was deleted: %v", err)
	}
	if locks, _ := filepath.Glob(filepath.Join(outside, "*.lock")); len(locks) > 0 {
		t.Fatalf("lock files created outside the tus folder: %v", locks)
	}
	if h.queued() != 0 {
		t.Fatalf("%d tasks queued", h.queued())
	}
}

// TestTusIgnoresWhereInfoPoints: an upload whose .info names another file
// (as a planted or edited .info would) is not found, so its bytes go
// nowhere and nothing outside the folder is appended to, deleted or
// claimed into the spool.
func TestTusIgnoresWhereInfoPoints(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	victim := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(victim, []byte("read token-a\n"), 0o600)
	id := h.createTus(t, "x.bin", 30)
	infoPath := filepath.Join(h.intake.cfg.TusDir, id+".info")
	var info map[string]any
	b, _ := os.ReadFile(infoPath)
	json.Unmarshal(b, &info)
	info["Storage"].(map[string]any)["Path"] = victim
	info["Offset"] = 13
	b, _ = json.Marshal(info)
	os.WriteFile(infoPath, b, 0o600)

	for _, tt := range []struct {
		method string
		hdr    map[string]string
		body   string
	}{
		{"HEAD", nil, ""},
		{"PATCH", map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, "admin STOLEN-TOKEN-0001\n"},
		{"PATCH", map[string]string{"Upload-Offset": "13", "Content-Type": "application/offset+octet-stream"}, "admin STOLEN-TOKEN\n"},
		{"DELETE", nil, ""},
	} {
		if a := h.tusRequest(t, tt.method, tusBase+id, strings.NewReader(tt.body), tt.hdr); a.Status != 404 {
			t.Errorf("%s of an upload whose .info points elsewhere: %d %s", tt.method, a.Status, a.Body)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "read token-a\n" {
		t.Fatalf("the file the .info named was touched: %q, %v", b, err)
	}
	if h.queued() != 0 {
		t.Fatalf("%d tasks queued", h.queued())
	}
}

// TestTusVerbsOnOwnUploads: the guard lets dab's own uploads through for
// every verb: HEAD, PATCH to the end (claimed and queued), DELETE.
func TestTusVerbsOnOwnUploads(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{})
	data := "0123456789"
	id := h.createTus(t, "NODE_own.png", len(data))
	if a := h.tusRequest(t, "HEAD", tusBase+id, nil, nil); a.Status != 200 || a.Header.Get("Upload-Offset") != "0" {
		t.Fatalf("HEAD: %d %v", a.Status, a.Header)
	}
	a := h.tusRequest(t, "PATCH", tusBase+id, strings.NewReader(data), map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
	if a.Status != 204 || a.Header.Get("Dab-Task-Id") == "" {
		t.Fatalf("PATCH: %d %v %s", a.Status, a.Header, a.Body)
	}
	// The final answer names what a one-request upload's body names.
	sum := sha256.Sum256([]byte(data))
	if a.Header.Get("Dab-Task-Id") != "upload-"+a.Header.Get("Dab-Spool-Id") || a.Header.Get("Dab-S3-Key") != "generic/NODE_own.png" ||
		a.Header.Get("Dab-Sha256") != hex.EncodeToString(sum[:]) {
		t.Fatalf("PATCH answer headers: %v", a.Header)
	}
	if h.queued() != 1 {
		t.Fatalf("%d tasks queued, want 1", h.queued())
	}
	other := h.createTus(t, "gone.bin", 5)
	if a := h.tusRequest(t, "DELETE", tusBase+other, nil, nil); a.Status != 204 {
		t.Fatalf("DELETE: %d %s", a.Status, a.Body)
	}
	if a := h.tusRequest(t, "HEAD", tusBase+other, nil, nil); a.Status != 404 {
		t.Fatalf("HEAD after DELETE: %d", a.Status)
	}
}

// TestTusSharesTheUploadSlots: resumable uploads count against
// DAB_MAX_CONCURRENT_UPLOADS like the other intakes.
func TestTusSharesTheUploadSlots(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{MaxConcurrent: 1})
	id := h.createTus(t, "slow.bin", 20)
	pr, pw := io.Pipe()
	done := make(chan answer, 1)
	go func() {
		done <- h.tusRequest(t, "PATCH", tusBase+id, pr, map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
	}()
	pw.Write([]byte("first"))
	h.eventually(10*time.Second, "the PATCH to hold the slot", func() bool { return len(h.intake.slots) == 1 })
	for _, method := range []string{"PATCH", "POST"} {
		path, hdr := tusBase+id, map[string]string{"Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"}
		if method == "POST" {
			path, hdr = tusBase, map[string]string{"Upload-Length": "3", "Upload-Metadata": "filename " + b64("b.bin")}
		}
		if a := h.tusRequest(t, method, path, strings.NewReader("x"), hdr); a.Status != 503 || a.Header.Get("Retry-After") == "" {
			t.Fatalf("second tus %s while the slot is taken: %d %s", method, a.Status, a.Body)
		}
	}
	pw.Write(bytes.Repeat([]byte("x"), 15))
	pw.Close()
	if a := <-done; a.Status != 204 {
		t.Fatalf("first PATCH: %d %s", a.Status, a.Body)
	}
	if len(h.intake.slots) != 0 {
		t.Fatal("the slot was not given back")
	}
}

// TestTusExpiresAbandonedUploads: an upload that received nothing for
// TusExpiry is removed; a recent one stays.
func TestTusExpiresAbandonedUploads(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{TusExpiry: time.Hour})
	old, fresh := h.createTus(t, "old.bin", 10), h.createTus(t, "fresh.bin", 10)
	h.tusRequest(t, "PATCH", tusBase+old, strings.NewReader("abc"), map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
	past := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{old, old + ".info"} {
		os.Chtimes(filepath.Join(h.intake.cfg.TusDir, p), past, past)
	}
	if n := h.intake.expireTus(context.Background(), time.Now()); n != 1 {
		t.Fatalf("expired %d uploads, want 1", n)
	}
	if a := h.tusRequest(t, "HEAD", tusBase+old, nil, nil); a.Status != 404 {
		t.Fatalf("abandoned upload still there: %d", a.Status)
	}
	if a := h.tusRequest(t, "HEAD", tusBase+fresh, nil, nil); a.Status != 200 {
		t.Fatalf("recent upload removed: %d", a.Status)
	}
	if _, err := os.Stat(filepath.Join(h.intake.cfg.TusDir, old)); !os.IsNotExist(err) {
		t.Fatalf("abandoned upload's bytes kept: %v", err)
	}
	if !strings.Contains(h.logs.String(), `"intake.tus_expired"`) {
		t.Fatal("no log line for the expired upload")
	}
}

// FuzzTusGuard: whatever path a request carries, the tus handler behind the
// guard only ever sees an upload ID that stays inside the tus folder.
func FuzzTusGuard(f *testing.F) {
	for _, s := range []string{"", "..%2F..%2Fvictim", "%2e%2e%2f", strings.Repeat("a", 32), strings.Repeat("0", 31) + "/", "a/../b", "%00"} {
		f.Add("PATCH", s)
	}
	in := &Intake{cfg: Config{MaxBytes: 1 << 20}, slots: make(chan struct{}, 4)}
	const dir = "/srv/dab/tus"
	f.Fuzz(func(t *testing.T, method, rawID string) {
		// The request as net/http's server parses it off the wire.
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + tusBase + rawID + " HTTP/1.1\r\nHost: dab.test\r\n\r\n")))
		if err != nil {
			return
		}
		in.tusGuard(http.StripPrefix("/v1/uploads", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := strings.Trim(r.URL.Path, "/") // what tusd takes as the ID
			if id == "" && (r.Method == http.MethodPost || r.Method == http.MethodOptions) {
				return
			}
			if p := filepath.Join(dir, id); filepath.Dir(p) != dir || !validTusID(id) {
				t.Fatalf("%s %q reached tusd with ID %q (%s)", method, rawID, id, p)
			}
		}))).ServeHTTP(httptest.NewRecorder(), req)
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// b64 encodes a tus Upload-Metadata value.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
