package task

import (
	"encoding/json"

	"github.com/dab-assets/dab/internal/asset"
)

// Facts is what a task tells those who read it through the API: the asset
// it recorded (an upload, an import) or buys (a purchase), the buyer it acts
// for, and whether only operators may read it.
type Facts struct {
	AssetID string
	BuyerID string
	// OperatorsOnly: a webhook delivery carries an event that may be any
	// account's, and a purchase that does not decode cannot say whose it
	// is; neither is shown to a token bound to an account.
	OperatorsOnly bool
}

// Describe reads the facts of a task of type typeName from its payload and
// result. A task of another type has none.
func Describe(typeName string, payload, result []byte) Facts {
	var f Facts
	switch typeName {
	case TypeUpload, TypeImport:
		var r UploadResult
		if len(result) > 0 && json.Unmarshal(result, &r) == nil {
			f.AssetID = r.AssetID
		}
	case TypePurchase:
		p, err := DecodePurchase(payload)
		f.BuyerID, f.OperatorsOnly = p.BuyerID, err != nil
		if err == nil && asset.ValidID(p.AssetID) {
			f.AssetID = p.AssetID // what it buys; anything but an asset ID is not shown
		}
	case TypeWebhook:
		f.OperatorsOnly = true
	}
	return f
}
