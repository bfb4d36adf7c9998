// The console's asset pages and its upload form.

package web

import (
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/plugin"
)

type assetsData struct {
	Records           []asset.Record
	Type, Owner, Name string
	Types             []string
	Next              string
}

func (c *Console) assets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := assetsData{Type: q.Get("type"), Owner: strings.TrimSpace(q.Get("owner")), Name: strings.TrimSpace(q.Get("name")), Types: c.d.Types}
	cursor := q.Get("cursor")
	// Owner and name filter the pages of the index; stop after a bounded scan.
	for scanned := 0; len(d.Records) < 50 && scanned < 20; scanned++ {
		page, err := c.d.Assets.List(r.Context(), asset.ListOptions{Type: d.Type, Cursor: cursor, Limit: 200})
		if err != nil {
			c.render(w, r, http.StatusBadRequest, "assets", "Assets", d, err.Error())
			return
		}
		for _, rec := range page.Records {
			if d.Owner != "" && rec.Owner != d.Owner {
				continue
			}
			if d.Name != "" && !strings.Contains(strings.ToLower(rec.Name), strings.ToLower(d.Name)) {
				continue
			}
			d.Records = append(d.Records, rec)
		}
		cursor = page.Next
		if cursor == "" {
			break
		}
	}
	d.Next = cursor
	c.render(w, r, http.StatusOK, "assets", "Assets", d, "")
}

type assetData struct {
	Rec    asset.Record
	Meta   [][2]string
	Key    string
	Story  string
	CanBuy bool
	// BuyAs is the account a bound login buys as (no buyer field then).
	BuyAs string
	// CanDownload shows the download button (owner or admin).
	CanDownload bool
	// Preview is a presigned URL of an image, shown inline.
	Preview string
	// CanList shows the owner's listing form.
	CanList bool
	// Sales are the asset's sales, oldest first.
	Sales []ledger.Sale
}

func (c *Console) assetPage(w http.ResponseWriter, r *http.Request) {
	rec, err := c.d.Assets.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, asset.ErrNotFound) {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil, "no asset "+r.PathValue("id"))
		return
	}
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	d := assetData{Rec: rec, Key: newKey()}
	for k, v := range rec.Metadata {
		if k == asset.PriceMetadata && rec.Owner != "" {
			// The uploader's price is what the house sold it for while
			// nobody owned it; "For sale" above says what holds now.
			k = "price (the house's, before it was sold)"
		}
		d.Meta = append(d.Meta, [2]string{k, v})
	}
	sort.Slice(d.Meta, func(i, j int) bool { return d.Meta[i][0] < d.Meta[j][0] })
	if rec.Type == "cyoa" {
		d.Story = rec.Metadata["story"]
	}
	caller, _ := api.CallerOf(r.Context())
	forSale := rec.Owner == "" && rec.Price != nil || rec.Owner != "" && rec.Listing != nil
	ownIt := caller.Account != "" && rec.Owner == caller.Account
	d.CanBuy = caller.Has(api.ScopePurchase+","+api.ScopeBroker) && forSale && !ownIt
	d.BuyAs = caller.Account
	d.CanDownload = caller.MayDownload(rec.Owner) && c.d.Downloads != nil
	d.CanList = rec.Owner != "" && caller.ActsFor(rec.Owner) && caller.Has(api.ScopePurchase)
	if sales, err := c.d.Ledger.Sales(r.Context(), rec.ID); err == nil {
		d.Sales = sales
	}
	if u, err := c.d.Downloads.PreviewURL(r.Context(), rec); err == nil {
		d.Preview = u
	}
	c.render(w, r, http.StatusOK, "asset", rec.Name, d, "")
}

func (c *Console) uploadPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "upload", "Upload", map[string]any{"Types": c.uploadTypes()}, "")
}

// uploadTypes lists the types with generic first: the form's default, as
// `dab upload`'s.
func (c *Console) uploadTypes() []string {
	out := make([]string, 0, len(c.d.Types))
	for _, t := range c.d.Types {
		if t == plugin.DefaultType {
			out = append([]string{t}, out...)
		} else {
			out = append(out, t)
		}
	}
	return out
}

func (c *Console) upload(w http.ResponseWriter, r *http.Request) {
	acc, err := c.d.Uploader.ReceiveForm(w, r)
	if err != nil {
		status := http.StatusBadRequest
		var se interface{ Status() int }
		if errors.As(err, &se) {
			status = se.Status()
		}
		c.render(w, r, status, "upload", "Upload", map[string]any{"Types": c.uploadTypes()}, err.Error())
		return
	}
	c.render(w, r, http.StatusAccepted, "uploaded", "Uploaded", map[string]any{"Upload": acc, "AssetID": asset.ID(c.d.Bucket, acc.Key)}, "")
}
