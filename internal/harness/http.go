package harness

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// Answer is an HTTP response read whole, for tests that check status,
// headers and body.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test if it is not JSON.
func (a Answer) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("answer %d %q: %v", a.Status, a.Body, err)
	}
}

// ErrorCode is the code of dab's JSON error body ({"error": {"code": ...}}),
// or "" when the body is not one.
func (a Answer) ErrorCode() string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(a.Body, &e)
	return e.Error.Code
}

// Request sends method url with body and headers hdr, with token as the
// bearer token (none when empty), and reads the answer whole.
func Request(t testing.TB, method, url, token string, body io.Reader, hdr map[string]string) Answer {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// A server that refuses a body may close the connection mid-answer;
	// what arrived is the answer.
	b, _ := io.ReadAll(resp.Body)
	return Answer{resp.StatusCode, resp.Header, b}
}
