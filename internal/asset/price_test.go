package asset_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/asset"
)

// TestParsePrice: a price is a whole number of credits from 0 (free) to
// CreditsMax in plain digits; anything else is refused with the cause and
// the fix (`--meta price=abc` was once recorded as "no price" and sold for
// any amount).
func TestParsePrice(t *testing.T) {
	t.Parallel()
	max := strconv.FormatInt(asset.CreditsMax, 10)
	for _, tt := range []struct {
		in    string
		want  int64
		cause string
	}{
		{"0", 0, ""},
		{"1", 1, ""},
		{"10", 10, ""},
		{"123456789012345", 123456789012345, ""},
		{max, asset.CreditsMax, ""},
		{"", 0, "it is empty"},
		{"abc", 0, "not a whole number"},
		{"1.5", 0, "not a whole number"},
		{"10.0", 0, "not a whole number"},
		{"1e3", 0, "not a whole number"},
		{"1E3", 0, "not a whole number"},
		{"0x10", 0, "not a whole number"},
		{"1_000", 0, "not a whole number"},
		{"1,000", 0, "not a whole number"},
		{"٣", 0, "not a whole number"}, // a digit, but not ASCII
		{"-1", 0, "negative"},
		{"-0", 0, "negative"},
		{"+5", 0, "sign"},
		{" 5", 0, "spaces"},
		{"5 ", 0, "spaces"},
		{"5\n", 0, "spaces"},
		{"05", 0, "leading zero"},
		{"00", 0, "leading zero"},
		{"1000000000000001", 0, "larger than the maximum"},
		{"99999999999999999999", 0, "larger than the maximum"},
		{"9223372036854775808", 0, "larger than the maximum"},
	} {
		n, err := asset.ParsePrice(tt.in)
		if tt.cause == "" {
			if err != nil || n != tt.want {
				t.Errorf("ParsePrice(%q) = %d, %v; want %d", tt.in, n, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, asset.ErrBadPrice) || !strings.Contains(err.Error(), tt.cause) ||
			!strings.Contains(err.Error(), "from 0 (free) to "+max) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
			t.Errorf("ParsePrice(%q) = %d, %v; want an ErrBadPrice that says %q and the fix", tt.in, n, err, tt.cause)
		}
	}
}

func FuzzParsePrice(f *testing.F) {
	for _, s := range []string{"0", "10", "1000000000000000", "1000000000000001", "-1", "05", " 5", "1e3", "", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := asset.ParsePrice(s)
		if err != nil {
			if !errors.Is(err, asset.ErrBadPrice) {
				t.Fatalf("ParsePrice(%q): %v is not ErrBadPrice", s, err)
			}
			if v, perr := strconv.ParseInt(s, 10, 64); perr == nil && v >= 0 && v <= asset.CreditsMax && strconv.FormatInt(v, 10) == s {
				t.Fatalf("ParsePrice(%q) refused a canonical price: %v", s, err)
			}
			return
		}
		// Accepted: exactly what strconv writes, within the bounds.
		if n < 0 || n > asset.CreditsMax || strconv.FormatInt(n, 10) != s {
			t.Fatalf("ParsePrice(%q) = %d", s, n)
		}
	})
}

// TestPutPrice: a record's price comes from Record.Price or the "price"
// metadata (nil: unpriced, 0: free); a bad price is refused and nothing is
// recorded; Put never lists.
func TestPutPrice(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	put := func(key string, md map[string]string, price *int64) (asset.Record, error) {
		r := rec(key, "s-"+key)
		r.Metadata, r.Price, r.Listing = md, price, asset.Credits(3)
		got, _, err := st.Put(ctx, r)
		return got, err
	}
	for _, tt := range []struct {
		key   string
		md    map[string]string
		price *int64
		want  string // "none", a number or an error
	}{
		{"none", nil, nil, "none"},
		{"meta", map[string]string{"price": "10"}, nil, "10"},
		{"free", map[string]string{"price": "0"}, nil, "0"},
		{"field", nil, asset.Credits(7), "7"},
		{"both", map[string]string{"price": "7"}, asset.Credits(7), "7"},
		{"abc", map[string]string{"price": "abc"}, nil, "not a whole number"},
		{"empty", map[string]string{"price": ""}, nil, "it is empty"},
		{"spaced", map[string]string{"price": " 5"}, nil, "spaces"},
		{"negative", nil, asset.Credits(-1), "from 0 (free)"},
		{"huge", nil, asset.Credits(asset.CreditsMax + 1), "from 0 (free)"},
		{"differ", map[string]string{"price": "8"}, asset.Credits(7), "differ"},
	} {
		got, err := put(tt.key, tt.md, tt.price)
		if strings.Trim(tt.want, "0123456789") != "" && tt.want != "none" {
			if !errors.Is(err, asset.ErrBadPrice) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want ErrBadPrice %q", tt.key, err, tt.want)
			}
			if _, gerr := st.Get(ctx, asset.ID("b", "cyoa/"+tt.key)); !errors.Is(gerr, asset.ErrNotFound) {
				t.Errorf("%s: a refused price was recorded: %v", tt.key, gerr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.key, err)
		}
		stored, err := st.Get(ctx, got.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []asset.Record{got, stored} {
			p := "none"
			if r.Price != nil {
				p = strconv.FormatInt(*r.Price, 10)
			}
			if p != tt.want || r.Listing != nil {
				t.Errorf("%s: price %s listing %v, want %s and no listing", tt.key, p, r.Listing, tt.want)
			}
		}
	}
}
