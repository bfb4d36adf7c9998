package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/localsvc"
)

const e2eToken = "e2e-admin-token-0123456789"

// httpE2E adds an API address and token to a test's environment.
func httpE2E(t *testing.T) (*e2e, string) {
	t.Helper()
	e := newE2E(t)
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + itoa(port)
	e.env = append(e.env, "DAB_HTTP_ADDR="+addr, "DAB_ADMIN_TOKEN="+e2eToken, "DAB_DROP_DIR="+filepath.Join(t.TempDir(), "drop"))
	return e, "http://" + addr
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestUploadThroughServer: `dab serve`, then the CLI uploads through the API
// (a small file in one PUT, a large one over tus) and follows the tasks.
func TestUploadThroughServer(t *testing.T) {
	t.Parallel()
	e, url := httpE2E(t)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	dir := t.TempDir()
	small, smallSum := writeRandomFile(t, dir, "NODE_a.png", 2000)
	big, bigSum := writeRandomFile(t, dir, "NODE_big.png", 20<<20)
	client := []string{"DAB_SERVER=" + url, "DAB_TOKEN=" + e2eToken}
	out, errOut, code := e.run(client, "upload", small, big, "--type", "cyoa", "--wait", "--json")
	if code != 0 {
		t.Fatalf("upload --server: exit %d\n%s\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, want := range []string{smallSum, bigSum} {
		var ul uploadLine
		json.Unmarshal([]byte(lines[i]), &ul)
		var res struct {
			AssetID string `json:"asset_id"`
			SHA256  string `json:"sha256"`
		}
		json.Unmarshal(ul.Result, &res)
		if ul.State != "completed" || res.SHA256 != want {
			t.Fatalf("line %d: %+v (result %s)", i, ul, ul.Result)
		}
		show, _, code := e.run(client, "assets", "show", res.AssetID, "--json")
		if code != 0 || !strings.Contains(show, want) {
			t.Fatalf("assets show --server: %d %s", code, show)
		}
		tasks, _, code := e.run(client, "tasks", "show", ul.TaskID)
		if code != 0 || !strings.Contains(tasks, "completed") || !strings.Contains(tasks, res.AssetID) {
			t.Fatalf("tasks show --server: %d %s", code, tasks)
		}
	}
	// Wrong token: a clear error.
	_, errOut, code = e.run([]string{"DAB_SERVER=" + url, "DAB_TOKEN=not-the-token-at-all"}, "assets", "list")
	if code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("wrong token: %d %s", code, errOut)
	}
}

// TestResumeAcrossRuns kills the CLI in the middle of a large upload and
// runs the same command again: it resumes from the server's offset.
func TestResumeAcrossRuns(t *testing.T) {
	t.Parallel()
	e, url := httpE2E(t)
	e.start(nil, "serve").waitLog(t, "http.listening", 30*time.Second)
	big, sum := writeRandomFile(t, t.TempDir(), "movie.bin", 300<<20)
	client := []string{"DAB_SERVER=" + url, "DAB_TOKEN=" + e2eToken}
	p := e.start(client, "upload", big)
	state := filepath.Join(e.dataDir, "client-uploads")
	var loc string
	harness.Eventually(t, 30*time.Second, "a resumable upload in progress", func() bool {
		files, _ := filepath.Glob(filepath.Join(state, "*.url"))
		if len(files) == 0 {
			return false
		}
		b, _ := os.ReadFile(files[0])
		loc = strings.TrimSpace(string(b))
		// Watch the server's partial file (asking the server would take the
		// upload's lock from the running PATCH).
		st, err := os.Stat(filepath.Join(e.dataDir, "tus", loc[strings.LastIndexByte(loc, '/')+1:]))
		return err == nil && st.Size() > 8<<20
	}, nil)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	cut := offset(t, loc)
	if cut <= 0 || cut >= 300<<20 {
		t.Fatalf("offset after the kill: %d", cut)
	}
	out, errOut, code := e.run(client, "upload", big, "--wait", "--json")
	if code != 0 || !strings.Contains(out, sum) {
		t.Fatalf("resumed upload: exit %d\n%s\n%s", code, out, errOut)
	}
	if files, _ := filepath.Glob(filepath.Join(state, "*.url")); len(files) != 0 {
		t.Fatal("resume state left after success")
	}
}

func offset(t *testing.T, loc string) int64 {
	req, _ := http.NewRequest(http.MethodHead, loc, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	var n int64
	json.Unmarshal([]byte(resp.Header.Get("Upload-Offset")), &n)
	return n
}

func TestServeRefusesOpenNetworkWithoutToken(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	_, errOut, code := e.run([]string{"DAB_HTTP_ADDR=0.0.0.0:0"}, "watch")
	if code != 1 || !strings.Contains(errOut, "no token is configured") || !strings.Contains(errOut, "--insecure") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// With --insecure it starts, and says so.
	p := e.start([]string{"DAB_HTTP_ADDR=0.0.0.0:0", "DAB_DROP_DIR=" + filepath.Join(t.TempDir(), "d")}, "watch", "--insecure")
	p.waitLog(t, "http.insecure", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-ctx.Done():
		t.Fatal("dab watch did not stop on SIGTERM")
	}
	if c := p.cmd.ProcessState.ExitCode(); c != 0 {
		t.Fatalf("exit %d after SIGTERM", c)
	}
}
