package api

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/asset"
)

// TestOpenAPISchemasMatchCode: the document's schemas say what the code
// answers. The rejection reasons are every reason the purchase script can
// store (a client that switches on the enum must know not_for_sale), and
// an asset has exactly the fields of asset.Record (price and listing).
func TestOpenAPISchemasMatchCode(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	lua, err := os.ReadFile("../ledger/purchase.lua")
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, m := range regexp.MustCompile(`reject\('([a-z_]+)'`).FindAllStringSubmatch(string(lua), -1) {
		if !slices.Contains(reasons, m[1]) {
			reasons = append(reasons, m[1])
		}
	}
	documented := slices.Clone(doc.Components.Schemas["Purchase"].Properties["reason"].Enum)
	sort.Strings(reasons)
	sort.Strings(documented)
	if len(reasons) < 5 || !slices.Equal(reasons, documented) {
		t.Errorf("Purchase.reason documents %v; purchase.lua rejects with %v", documented, reasons)
	}

	var fields []string
	rt := reflect.TypeFor[asset.Record]()
	for i := range rt.NumField() {
		if name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			fields = append(fields, name)
		}
	}
	var props []string
	for p := range doc.Components.Schemas["Asset"].Properties {
		props = append(props, p)
	}
	sort.Strings(fields)
	sort.Strings(props)
	if !slices.Equal(fields, props) {
		t.Errorf("the Asset schema has %v; asset.Record has %v", props, fields)
	}
}
