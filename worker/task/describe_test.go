package task

import "testing"

// TestDescribe: what the task API may show of each task type, read from
// the payloads and results this package makes.
func TestDescribe(t *testing.T) {
	t.Parallel()
	purchase := []byte(`{"purchase_id":"p1","asset_id":"0123456789abcdef0123","buyer_id":"bob","credits":3}`)
	result := []byte(`{"asset_id":"a9","s3_bucket":"b","s3_key":"generic/x","sha256":"00","existed":false}`)
	tests := []struct {
		name            string
		typ             string
		payload, result []byte
		want            Facts
	}{
		{"upload done", TypeUpload, []byte(`{"spool_id":"x"}`), result, Facts{AssetID: "a9"}},
		{"upload pending", TypeUpload, []byte(`{"spool_id":"x"}`), nil, Facts{}},
		{"upload, result not JSON", TypeUpload, nil, []byte("oops"), Facts{}},
		{"import done", TypeImport, nil, result, Facts{AssetID: "a9"}},
		{"purchase", TypePurchase, purchase, nil, Facts{AssetID: "0123456789abcdef0123", BuyerID: "bob"}},
		{"purchase with a hostile asset ID", TypePurchase, []byte(`{"purchase_id":"p1","asset_id":"../a1","buyer_id":"bob","credits":3}`), nil, Facts{BuyerID: "bob"}},
		{"purchase that does not decode", TypePurchase, []byte(`{"buyer_id":"bob","credits":-1}`), nil, Facts{BuyerID: "bob", OperatorsOnly: true}},
		{"purchase, not JSON", TypePurchase, []byte(`[`), nil, Facts{OperatorsOnly: true}},
		{"webhook delivery", TypeWebhook, []byte(`{"endpoint":"e","event":{"id":"1-0"}}`), nil, Facts{OperatorsOnly: true}},
		{"a type dab does not know", "other:task", purchase, result, Facts{}},
	}
	for _, tt := range tests {
		if got := Describe(tt.typ, tt.payload, tt.result); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
