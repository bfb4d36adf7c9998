package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/internal/asset"
)

// runAssets: dab assets list [--type T] [--json] | dab assets show ID [--json].
func runAssets(ctx context.Context, e *env, args []string) error {
	var (
		assetType, cursor string
		limit             int
		asJSON            bool
	)
	a, err := e.parse("assets", args, func(fs *flag.FlagSet) {
		fs.StringVar(&assetType, "type", "", "list: only assets of this type")
		fs.StringVar(&cursor, "cursor", "", "list: continue after a previous page (its next_cursor)")
		fs.IntVar(&limit, "limit", 50, "list: records per page (1-1000)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	if len(a.args) == 0 {
		return fmt.Errorf("%w: dab assets list [--type T] [--json] | dab assets show ID [--json]", errUsage)
	}
	// Records come from the local Redis, or from DAB_SERVER.
	var (
		list func(context.Context, asset.ListOptions) (asset.Page, error)
		get  func(context.Context, string) (asset.Record, error)
	)
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return err
		}
		list = c.Assets
		get = func(ctx context.Context, id string) (asset.Record, error) {
			r, err := c.Asset(ctx, id)
			var ae *apiclient.Error
			if errors.As(err, &ae) && ae.Status == 404 {
				return r, asset.ErrNotFound
			}
			return r, err
		}
	} else {
		rdb, err := a.connectRedis(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		st := a.assets(rdb)
		list, get = st.List, st.Get
	}
	switch a.args[0] {
	case "list":
		if limit < 1 || limit > 1000 {
			return fmt.Errorf("%w: --limit %d: use 1 to 1000", errUsage, limit)
		}
		page, err := list(ctx, asset.ListOptions{Type: assetType, Cursor: cursor, Limit: limit})
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(a, page)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTYPE\tSIZE\tOWNER\tCREATED\tS3 KEY")
		for _, r := range page.Records {
			owner := r.Owner
			if owner == "" {
				owner = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Type, r.Size, owner, r.CreatedAt.Format(time.DateTime), r.S3Key)
		}
		tw.Flush()
		if page.Next != "" {
			fmt.Fprintf(a.stdout, "more: dab assets list --cursor %s\n", page.Next)
		}
		return nil
	case "show":
		if len(a.args) != 2 {
			return fmt.Errorf("%w: dab assets show ID", errUsage)
		}
		r, err := get(ctx, a.args[1])
		if errors.Is(err, asset.ErrNotFound) {
			return fmt.Errorf("no asset with ID %q: list IDs with `dab assets list`", a.args[1])
		}
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(a, r)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		for _, kv := range [][2]string{
			{"id", r.ID}, {"name", r.Name}, {"type", r.Type}, {"s3", "s3://" + r.S3Bucket + "/" + r.S3Key},
			{"size", fmt.Sprint(r.Size)}, {"sha256", r.SHA256}, {"content_type", r.ContentType},
			{"owner", r.Owner}, {"created_at", r.CreatedAt.Format(time.RFC3339)}, {"task_id", r.TaskID},
		} {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "metadata.%s:\t%s\n", k, r.Metadata[k])
		}
		return tw.Flush()
	default:
		return fmt.Errorf("%w: unknown assets verb %q: use list or show", errUsage, a.args[0])
	}
}

func writeJSON(a *app, v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
