package asset_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/naming"
)

// TestCallerMetadataCannotShadowRecordFields: no caller metadata key may be
// the name of a field of the record as the API, the console, events and
// webhooks show it (a "listing" or "metadata" beside dab's own would read
// as dab's), except "price", which is how an uploader sets the house price.
// A field added to the record later is covered without a change here.
func TestCallerMetadataCannotShadowRecordFields(t *testing.T) {
	t.Parallel()
	rt := reflect.TypeOf(asset.Record{})
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" || name == asset.PriceMetadata {
			continue
		}
		if err := naming.CheckMetadataKey(name); err == nil || !strings.Contains(err.Error(), "dab's own field") {
			t.Errorf("caller metadata key %q (the record's field %s) = %v, want refused as dab's own field", name, rt.Field(i).Name, err)
		}
	}
}
