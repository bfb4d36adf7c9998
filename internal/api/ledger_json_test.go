package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// ledgerBody has the fields of the ledger's request bodies.
type ledgerBody struct {
	AssetID string          `json:"asset_id"`
	BuyerID string          `json:"buyer_id"`
	Credits json.RawMessage `json:"credits"`
}

func decodeBody(body []byte) (ledgerBody, error) {
	var v ledgerBody
	err := DecodeJSON(httptest.NewRequest("POST", "/", bytes.NewReader(body)), &v)
	return v, err
}

// TestDecodeJSON: one JSON object, whitespace around it, nothing else, at
// most JSONBodyMax bytes. The trailing-data check once looked only at what
// the 64 KiB limit let through, so garbage after 5 MB of spaces passed.
func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	const obj = `{"credits":5}`
	pad := func(n int) string { return strings.Repeat(" ", n) }
	const tooLarge = "too large"
	tests := []struct {
		name, body string
		want       string // "" accepted; tooLarge; else a part of the error
	}{
		{"object", obj, ""},
		{"whitespace around", " \t\r\n" + obj + " \t\r\n", ""},
		{"whitespace up to the limit", obj + pad(JSONBodyMax-len(obj)), ""},
		{"whitespace one byte past the limit", obj + pad(JSONBodyMax-len(obj)+1), tooLarge},
		{"the attack: 5 MB of spaces, then garbage", obj + pad(5<<20) + "garbage", tooLarge},
		{"object past the limit", `{"asset_id":"` + strings.Repeat("a", JSONBodyMax) + `","credits":5}`, tooLarge},
		{"garbage after spaces inside the limit", obj + pad(60000) + "garbage", "after the JSON value"},
		{"garbage in the last byte allowed", obj + pad(JSONBodyMax-len(obj)-1) + "x", "after the JSON value"},
		{"a second object", obj + "{}", "after the JSON value"},
		{"a second object on the next line", obj + "\n{}", "after the JSON value"},
		{"a NUL after", obj + "\x00", "after the JSON value"},
		{"a no-break space after (not JSON whitespace)", obj + "\u00a0", "after the JSON value"},
		{"a closing brace too many", obj + "}", "after the JSON value"},
		{"unknown field", `{"credits":5,"extra":1}`, "unknown field"},
		{"empty", "", "empty"},
		{"only whitespace", " \n ", "empty"},
		{"cut short", `{"credits":`, "not the expected JSON object"},
		{"an array", `[]`, "not the expected JSON object"},
		{"a byte-order mark", "\ufeff" + obj, "not the expected JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := decodeBody([]byte(tt.body))
			switch tt.want {
			case "":
				if err != nil || string(v.Credits) != "5" {
					t.Fatalf("DecodeJSON: %+v, %v; want credits 5", v, err)
				}
			case tooLarge:
				if !errors.Is(err, ErrBodyTooLarge) || !strings.Contains(err.Error(), "64 KiB") {
					t.Fatalf("DecodeJSON: %v; want ErrBodyTooLarge naming the limit", err)
				}
			default:
				if err == nil || errors.Is(err, ErrBodyTooLarge) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("DecodeJSON: %v; want an error about %q", err, tt.want)
				}
			}
		})
	}
}

// FuzzDecodeJSON: DecodeJSON accepts exactly the bodies of at most
// JSONBodyMax bytes that are one JSON value (whitespace around it allowed)
// which the standard decoder, strict about fields, reads into the target;
// and then it reads the same values.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"credits":5}`, `{"credits":5}` + strings.Repeat(" ", 70000) + "garbage",
		`{"credits":5} x`, `{"credits":5}{}`, " {\"asset_id\":\"a\",\"buyer_id\":\"b\",\"credits\":1}\n", `{"credits":5,"x":1}`,
		`null`, `{}`, ``, `[`, `{"credits":1e400}`, `{"asset_id":"\u0000"}`, "{\"credits\":5}\u00a0"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := decodeBody(body)
		var want ledgerBody
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		dec.UseNumber()
		stdErr := dec.Decode(&want)
		whole := json.Valid(body)
		switch {
		case len(body) > JSONBodyMax:
			if !errors.Is(err, ErrBodyTooLarge) {
				t.Fatalf("%d bytes: %v, want ErrBodyTooLarge", len(body), err)
			}
		case err == nil:
			if !whole || stdErr != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("accepted %q as %+v (valid %v, standard decoder %+v, %v)", body, got, whole, want, stdErr)
			}
		case whole && stdErr == nil:
			t.Fatalf("refused %q: %v", body, err)
		}
	})
}
