package intake

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/spool"
)

// slowBody sends one byte every gap until stop is closed.
func slowBody(gap time.Duration, stop <-chan struct{}) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		for {
			select {
			case <-stop:
				return
			case <-time.After(gap):
			}
			if _, err := pw.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	return pr
}

// TestTricklingUploadsLoseTheirSlot: a client that sends a byte now and
// then is stopped once a window falls below the minimum rate (408), nothing
// of it is kept and its slot is free again; a steady upload goes through.
func TestTricklingUploadsLoseTheirSlot(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{MaxConcurrent: 1, MinRate: 1000, MinRateWindow: 400 * time.Millisecond})
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	a := h.do(t, "PUT", "/v1/assets/generic/trickle.bin", testIngest, slowBody(100*time.Millisecond, stop), nil)
	if a.Status != http.StatusRequestTimeout || a.ErrorCode() != "too_slow" || !strings.Contains(string(a.Body), "DAB_MIN_UPLOAD_RATE") {
		t.Fatalf("trickling PUT: %d %s", a.Status, a.Body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the trickling upload held its slot for %s", took)
	}
	spoolEmpty(t, h.spool)
	if len(h.intake.slots) != 0 {
		t.Fatal("the slot was not given back")
	}
	// tus: the PATCH is stopped the same way; what arrived is kept for a resume.
	id := h.createTus(t, "trickle.bin", 1000)
	start = time.Now()
	a = h.tusRequest(t, "PATCH", tusBase+id, slowBody(100*time.Millisecond, stop), map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
	if a.Status != http.StatusRequestTimeout || !strings.Contains(string(a.Body), "DAB_MIN_UPLOAD_RATE") {
		t.Fatalf("trickling PATCH: %d %s", a.Status, a.Body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the trickling PATCH held its connection for %s", took)
	}
	if len(h.intake.slots) != 0 {
		t.Fatal("the tus slot was not given back")
	}
	if a := h.do(t, "PUT", "/v1/assets/generic/steady.bin", testIngest, strings.NewReader(strings.Repeat("s", 256<<10)), nil); a.Status != http.StatusAccepted {
		t.Fatalf("steady PUT: %d %s", a.Status, a.Body)
	}
}

// mountTmpfs mounts a tmpfs of size bytes for the test: a disk that can
// really fill up.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("filling a real disk needs a small tmpfs, which only root can mount (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+itoa(size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s: %v %s", size, dir, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// TestFullDisk: uploads into a spool whose disk fills up are answered 507
// (with Retry-After, without the server's paths) and leave nothing behind
// but a resumable upload's received bytes; the free-space floor refuses
// them up front and makes the readiness check fail.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	disk := mountTmpfs(t, 1<<20)
	sp, err := spool.Open(filepath.Join(disk, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	useDisk := func(b *bundle) { b.spool = sp }
	h := setupHTTP(t, Config{TusDir: filepath.Join(disk, "tus")}, useDisk)
	noPath := func(what string, a answer) {
		t.Helper()
		if a.Status != http.StatusInsufficientStorage || a.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(a.Body), "disk is full") || strings.Contains(string(a.Body), disk) {
			t.Fatalf("%s on a full disk: %d %v %s", what, a.Status, a.Header, a.Body)
		}
	}
	big := strings.Repeat("b", 2<<20)
	// Chunked, so the size is unknown until the disk runs out.
	noPath("PUT", h.earlyAnswer(t, "PUT", "/v1/assets/generic/big.bin", map[string]string{"Authorization": "Bearer " + testIngest}, strings.NewReader(big)))
	spoolEmpty(t, h.spool)

	id := h.createTus(t, "big.bin", len(big))
	noPath("tus PATCH", h.earlyAnswer(t, "PATCH", tusBase+id, map[string]string{"Authorization": "Bearer " + testIngest, "Tus-Resumable": "1.0.0",
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, strings.NewReader(big)))
	if a := h.tusRequest(t, "HEAD", tusBase+id, nil, nil); a.Status != 200 || a.Header.Get("Upload-Offset") == "0" {
		t.Fatalf("the received part was not kept for a resume: %d %v", a.Status, a.Header)
	}
	if a := h.tusRequest(t, "DELETE", tusBase+id, nil, nil); a.Status != 204 {
		t.Fatalf("DELETE: %d %s", a.Status, a.Body)
	}

	// With a floor of 768 KiB on this 1 MiB disk, 300 KiB declared is
	// refused before a byte is written, and the disk is reported not ready.
	floor := setupHTTP(t, Config{TusDir: filepath.Join(disk, "tus"), MinFreeBytes: 768 << 10}, useDisk)
	noPath("PUT under the floor", floor.do(t, "PUT", "/v1/assets/generic/mid.bin", testIngest, strings.NewReader(strings.Repeat("m", 300<<10)), nil))
	noPath("tus POST under the floor", floor.tusRequest(t, "POST", tusBase, nil, map[string]string{"Upload-Length": itoa(300 << 10), "Upload-Metadata": "filename " + b64("mid.bin")}))
	if a := floor.do(t, "PUT", "/v1/assets/generic/small.bin", testIngest, strings.NewReader("small"), nil); a.Status != http.StatusAccepted {
		t.Fatalf("a small file above the floor: %d %s", a.Status, a.Body)
	}
	if err := floor.intake.CheckDisk(context.Background()); err != nil {
		t.Fatalf("CheckDisk with room above the floor: %v", err)
	}
	fill, _ := os.Create(filepath.Join(disk, "filler"))
	io.Copy(fill, strings.NewReader(strings.Repeat("f", 400<<10)))
	fill.Close()
	if err := floor.intake.CheckDisk(context.Background()); err == nil || !strings.Contains(err.Error(), "DAB_MIN_FREE_BYTES") {
		t.Fatalf("CheckDisk below the floor: %v", err)
	}
}

// TestSilentUploadsLoseTheirSlot: a client that sends nothing at all after
// its headers is stopped when the rate window closes, not an idle minute
// later, on PUT and tus PATCH alike.
func TestSilentUploadsLoseTheirSlot(t *testing.T) {
	t.Parallel()
	h := setupHTTP(t, Config{MaxConcurrent: 1, MinRate: 1000, MinRateWindow: 500 * time.Millisecond})
	silent := func() io.Reader { pr, _ := io.Pipe(); return pr }
	start := time.Now()
	req, _ := http.NewRequest("PUT", h.srv.URL+"/v1/assets/generic/silent.bin", silent())
	req.ContentLength = 1 << 20
	req.Header.Set("Authorization", "Bearer "+testIngest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "DAB_MIN_UPLOAD_RATE") {
		t.Fatalf("silent PUT: %d %s", resp.StatusCode, b)
	}
	id := h.createTus(t, "silent.bin", 1<<20)
	a := h.tusRequest(t, "PATCH", tusBase+id, silent(), map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
	if a.Status != http.StatusRequestTimeout || !strings.Contains(string(a.Body), "DAB_MIN_UPLOAD_RATE") {
		t.Fatalf("silent PATCH: %d %s", a.Status, a.Body)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("silent clients held the slot for %s", took)
	}
	if len(h.intake.slots) != 0 {
		t.Fatal("the slot was not given back")
	}
}

// TestFloorHoldsForEveryUpload: DAB_MIN_FREE_BYTES holds for bodies of
// unknown size (chunked PUT, tus PATCH) and for uploads running at the same
// time, not only for one declared size; and a disk that is full answers
// every tus verb 507, an unreadable upload 404, never a 500 with a path.
func TestFloorHoldsForEveryUpload(t *testing.T) {
	t.Parallel()
	disk := mountTmpfs(t, 8<<20)
	sp, err := spool.Open(filepath.Join(disk, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	h := setupHTTP(t, Config{TusDir: filepath.Join(disk, "tus"), MinFreeBytes: 4 << 20}, func(b *bundle) { b.spool = sp })
	free := func() int64 { n, _ := sp.FreeBytes(); return n }
	refused := func(what string, a answer) {
		t.Helper()
		if a.Status != http.StatusInsufficientStorage || strings.Contains(string(a.Body), disk) {
			t.Fatalf("%s: %d %s", what, a.Status, a.Body)
		}
		if f := free(); f < 3<<20 {
			t.Fatalf("%s: the disk went down to %d bytes free, under the floor", what, f)
		}
	}
	big := strings.Repeat("c", 6<<20)
	refused("chunked PUT past the floor", h.earlyAnswer(t, "PUT", "/v1/assets/generic/chunked.bin", map[string]string{"Authorization": "Bearer " + testIngest}, strings.NewReader(big)))
	spoolEmpty(t, h.spool)

	id := h.createTus(t, "t.bin", 3<<20)
	other := h.createTus(t, "u.bin", 3<<20)
	// A PATCH of unknown length: the rest of the file (3 MiB) is promised up front.
	a := h.tusRequest(t, "PATCH", tusBase+id, io.MultiReader(strings.NewReader(big[:3<<20])), map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream", "Transfer-Encoding": "chunked"})
	if a.Status != 204 {
		t.Fatalf("a PATCH that fits: %d %s", a.Status, a.Body)
	}
	refused("a second 3 MiB tus upload", h.earlyAnswer(t, "PATCH", tusBase+other, map[string]string{"Authorization": "Bearer " + testIngest, "Tus-Resumable": "1.0.0",
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, strings.NewReader(big[:3<<20])))

	// Two declared uploads at once: their promises add up.
	first, err := h.intake.reserve(256 << 10)
	if err != nil {
		t.Fatalf("first reservation: %v", err)
	}
	if _, err := h.intake.reserve(free() - h.intake.cfg.MinFreeBytes - (256 << 10) + 4096); !errors.Is(err, errNoSpace) {
		t.Fatalf("a second reservation past the floor: %v", err)
	}
	first.release()
	if h.intake.reserved != 0 {
		t.Fatalf("%d bytes still promised after release", h.intake.reserved)
	}

	// Fill the disk to the last byte: every tus verb on an existing upload
	// is 507 (tusd's lock file cannot be written), never a 500 with a path.
	fill, _ := os.Create(filepath.Join(disk, "filler"))
	io.Copy(fill, strings.NewReader(strings.Repeat("f", 16<<20)))
	fill.Close()
	for _, m := range []string{"HEAD", "PATCH", "DELETE"} {
		a := h.tusRequest(t, m, tusBase+other, strings.NewReader("x"), map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
		if a.Status != http.StatusInsufficientStorage || strings.Contains(string(a.Body), disk) {
			t.Errorf("%s on a full disk: %d %s", m, a.Status, a.Body)
		}
	}
	os.Remove(filepath.Join(disk, "filler"))
	// An upload whose .info cannot be read is not found, not a 500.
	os.WriteFile(filepath.Join(disk, "tus", other+".info"), nil, 0o600)
	if a := h.tusRequest(t, "HEAD", tusBase+other, nil, nil); a.Status != 404 {
		t.Fatalf("HEAD of an unreadable upload: %d %s", a.Status, a.Body)
	}
}

// earlyAnswer sends a request whose body the server may refuse half-way
// (507, 408) and reads the answer while the body is still being written, as
// a careful client does: a server that stops reading resets the connection,
// and a client that only looks at its write error never sees why.
func (h *httpBundle) earlyAnswer(t *testing.T, method, path string, hdr map[string]string, body io.Reader) answer {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := method + " " + path + " HTTP/1.1\r\nHost: dab.test\r\nTransfer-Encoding: chunked\r\n"
	for k, v := range hdr {
		head += k + ": " + v + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		cw := httputil.NewChunkedWriter(conn)
		io.Copy(cw, body) // stops at the reset; the answer says why
		cw.Close()
		io.WriteString(conn, "\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: no answer: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}
