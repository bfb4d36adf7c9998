package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/storage"
	"github.com/dab-assets/dab/worker"
)

// reconcileReport is what `dab reconcile` found (--json prints it).
type reconcileReport struct {
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix"`
	DryRun bool   `json:"dry_run"`
	// Objects is the number of objects listed under the prefix.
	Objects int `json:"objects"`
	// Journal objects hold the ledger's journal (under journal/), not
	// assets: counted, not checked.
	Journal int `json:"journal_objects"`
	// Staged objects are imports' staged copies (under
	// storage.StagingPrefix) left behind: not assets; counted, and safe to
	// delete once no import runs.
	Staged int `json:"staged_copies"`
	// Recorded objects had their record already.
	Recorded int `json:"recorded"`
	// Recreated objects had no record and got one again (with --dry-run:
	// would get one).
	Recreated []reconcileItem `json:"recreated"`
	// NoMetadata objects carry no dab record metadata: not written by dab,
	// or by a dab from before records were kept on objects.
	NoMetadata []reconcileItem `json:"objects_without_metadata"`
	// BadMetadata objects carry damaged dab metadata.
	BadMetadata []reconcileItem `json:"objects_with_bad_metadata"`
	// Failed objects could not be recorded (a record with other content,
	// a type without a plugin, a bad price).
	Failed []reconcileItem `json:"failed"`
	// Records is the number of records checked for their object.
	Records int `json:"records"`
	// NoObject records name an object that is gone.
	NoObject []reconcileItem `json:"records_without_object"`
	// OtherBucket records name another bucket; they were not checked.
	OtherBucket int `json:"records_in_other_buckets"`
}

type reconcileItem struct {
	Key     string `json:"s3_key"`
	AssetID string `json:"asset_id,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// problems counts what reconcile cannot repair.
func (r *reconcileReport) problems() int {
	return len(r.NoMetadata) + len(r.BadMetadata) + len(r.Failed) + len(r.NoObject)
}

func (c *cli) reconcileCmd() *cobra.Command {
	var (
		prefix         string
		dryRun, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile [--prefix PREFIX] [--dry-run] [--json]",
		Short: "rebuild missing asset records from the objects' own metadata in the bucket",
		Long: `List the bucket and record again every object with dab metadata whose record
is missing (after a Redis that lost data), then check that every record
still has its object. Objects without dab metadata and records whose object
is gone are reported (exit 1). Recording is idempotent: safe while dab
works, and to run again.`,
		Example: `  dab reconcile --dry-run
  dab reconcile --prefix cyoa/ --json`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			return a.reconcile(cmd.Context(), prefix, dryRun, asJSON)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&prefix, "prefix", "", "only objects and records whose S3 key starts with `PREFIX` (such as cyoa/)")
	fs.BoolVar(&dryRun, "dry-run", false, "report what would be recreated; change nothing")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// reconcile records again every object of the bucket under prefix whose
// record is missing, then checks that every record has its object.
func (a *app) reconcile(ctx context.Context, prefix string, dryRun, asJSON bool) error {
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := a.storage(ctx)
	if err != nil {
		return err
	}
	rc := &reconciler{
		store: st, assets: a.assets(rdb), plugins: builtin.Registry(), dryRun: dryRun,
		report: reconcileReport{Bucket: st.Bucket(), Prefix: prefix, DryRun: dryRun,
			Recreated: []reconcileItem{}, NoMetadata: []reconcileItem{}, BadMetadata: []reconcileItem{}, Failed: []reconcileItem{}, NoObject: []reconcileItem{}},
		seen: map[string]bool{},
	}
	if isTerminal(a.stderr) {
		rc.progress = a.stderr
	}
	if err := rc.objects(ctx, prefix); err != nil {
		return err
	}
	if err := rc.records(ctx, prefix); err != nil {
		return err
	}
	rc.draw(true)
	r := &rc.report
	if asJSON {
		if err := writeJSON(a, r); err != nil {
			return err
		}
	} else {
		printReconcile(a.stdout, r)
	}
	if n := r.problems(); n > 0 {
		return fmt.Errorf("found %s it cannot repair (listed above)", plural(n, "problem", "problems"))
	}
	return nil
}

type reconciler struct {
	store   *storage.Store
	assets  *asset.Store
	plugins *plugin.Registry
	dryRun  bool
	report  reconcileReport
	// seen holds the asset IDs of the objects listed with dab metadata.
	seen map[string]bool
	// progress is the terminal that shows progress, nil when none.
	progress io.Writer
	drawn    time.Time
	phase    string
}

// objects lists the bucket and records each object whose record is missing.
func (rc *reconciler) objects(ctx context.Context, prefix string) error {
	r := &rc.report
	rc.phase = "objects"
	return rc.store.List(ctx, prefix, func(o storage.ObjectInfo) error {
		r.Objects++
		defer rc.draw(false)
		if strings.HasPrefix(o.Key, ledger.DefaultJournalPrefix) {
			r.Journal++
			return nil
		}
		if strings.HasPrefix(o.Key, storage.StagingPrefix) {
			r.Staged++ // an import's staged copy its task did not delete
			return nil
		}
		obj, err := rc.store.Head(ctx, o.Key)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // removed since the listing: nothing to record
		}
		if err != nil {
			return err
		}
		om, err := obj.RecordMeta()
		if errors.Is(err, storage.ErrNoRecordMetadata) {
			r.NoMetadata = append(r.NoMetadata, reconcileItem{Key: o.Key})
			return nil
		}
		if err != nil {
			r.BadMetadata = append(r.BadMetadata, reconcileItem{Key: o.Key, Detail: err.Error()})
			return nil
		}
		id := asset.ID(rc.store.Bucket(), o.Key)
		rc.seen[id] = true
		rec, err := rc.assets.Get(ctx, id)
		switch {
		case err == nil && rec.SHA256 == om.SHA256:
			r.Recorded++
			return nil
		case err == nil:
			r.Failed = append(r.Failed, reconcileItem{Key: o.Key, AssetID: id,
				Detail: fmt.Sprintf("the record has sha256 %s, the object %s: inspect both", rec.SHA256, om.SHA256)})
			return nil
		case !errors.Is(err, asset.ErrNotFound):
			return err
		}
		want := asset.Record{
			Type: om.Type, Path: om.Path, S3Bucket: rc.store.Bucket(), S3Key: o.Key, Size: om.Size,
			SHA256: om.SHA256, ContentType: om.ContentType, Metadata: om.Metadata,
			CreatedAt: om.CreatedAt, Source: om.Source,
		}
		if rc.dryRun {
			if detail := rc.wouldFail(want); detail != "" {
				r.Failed = append(r.Failed, reconcileItem{Key: o.Key, AssetID: id, Detail: detail})
			} else {
				r.Recreated = append(r.Recreated, reconcileItem{Key: o.Key, AssetID: id})
			}
			return nil
		}
		_, created, err := worker.RecordAsset(ctx, rc.plugins, rc.assets, want)
		switch {
		case errors.Is(err, worker.ErrUnknownType), errors.Is(err, asset.ErrBadPrice), errors.Is(err, asset.ErrConflict):
			r.Failed = append(r.Failed, reconcileItem{Key: o.Key, AssetID: id, Detail: err.Error()})
		case err != nil:
			return fmt.Errorf("record s3://%s/%s: %w", rc.store.Bucket(), o.Key, err)
		case created:
			r.Recreated = append(r.Recreated, reconcileItem{Key: o.Key, AssetID: id})
		default:
			r.Recorded++ // a worker recorded it meanwhile
		}
		return nil
	})
}

// wouldFail says why recording want would fail, for --dry-run.
func (rc *reconciler) wouldFail(want asset.Record) string {
	if err := rc.plugins.CheckType(want.Type); err != nil {
		return err.Error()
	}
	if p, ok := want.Metadata[asset.PriceMetadata]; ok {
		if _, err := asset.ParsePrice(p); err != nil {
			return err.Error()
		}
	}
	return ""
}

// records checks that every record under the prefix has its object.
func (rc *reconciler) records(ctx context.Context, prefix string) error {
	r := &rc.report
	rc.phase = "records"
	cursor := ""
	for {
		page, err := rc.assets.List(ctx, asset.ListOptions{Cursor: cursor, Limit: 1000})
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			if rec.S3Bucket != rc.store.Bucket() {
				r.OtherBucket++
				continue
			}
			if !strings.HasPrefix(rec.S3Key, prefix) {
				continue
			}
			r.Records++
			rc.draw(false)
			if rc.seen[rec.ID] {
				continue
			}
			// Not in the listing: gone, or uploaded after the listing passed it.
			_, err := rc.store.Head(ctx, rec.S3Key)
			if errors.Is(err, storage.ErrNotFound) {
				r.NoObject = append(r.NoObject, reconcileItem{Key: rec.S3Key, AssetID: rec.ID})
			} else if err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

// draw shows the counts on the terminal, at most ten times a second.
func (rc *reconciler) draw(final bool) {
	if rc.progress == nil || (!final && time.Since(rc.drawn) < 100*time.Millisecond) {
		return
	}
	rc.drawn = time.Now()
	r := &rc.report
	fmt.Fprintf(rc.progress, "\rreconcile: %s, %s, %d recreated, %s", plural(r.Objects, "object", "objects"), plural(r.Records, "record", "records"), len(r.Recreated), plural(r.problems(), "problem", "problems"))
	if final {
		fmt.Fprintln(rc.progress)
	}
}

func printReconcile(w io.Writer, r *reconcileReport) {
	verb, note := "recreated", ""
	if r.DryRun {
		verb, note = "would recreate", " (dry run: nothing changed)"
	}
	for _, it := range r.Recreated {
		outf(w, "%s %s s3://%s/%s\n", verb, it.AssetID, r.Bucket, it.Key)
	}
	for _, it := range r.NoMetadata {
		outf(w, "NO METADATA: s3://%s/%s has no dab record metadata (put there by something else, or by a dab from before records were kept on objects): upload the file through dab again, or remove the object\n", r.Bucket, it.Key)
	}
	for _, it := range r.BadMetadata {
		outf(w, "BAD METADATA: %s\n", it.Detail)
	}
	for _, it := range r.Failed {
		outf(w, "FAILED: s3://%s/%s: %s\n", r.Bucket, it.Key, it.Detail)
	}
	for _, it := range r.NoObject {
		outf(w, "NO OBJECT: asset %s: s3://%s/%s is gone: restore the object (bucket versioning, a backup), or upload the file again\n", it.AssetID, r.Bucket, it.Key)
	}
	outf(w, "s3://%s/%s: %s: %d recorded, %d %s, %d without dab metadata, %d with bad metadata, %d failed, %d of the ledger's journal; %s: %d without their object",
		r.Bucket, r.Prefix, plural(r.Objects, "object", "objects"), r.Recorded, len(r.Recreated), verb, len(r.NoMetadata), len(r.BadMetadata), len(r.Failed), r.Journal,
		plural(r.Records, "record", "records"), len(r.NoObject))
	if r.OtherBucket > 0 {
		outf(w, " (%s of other buckets not checked)", plural(r.OtherBucket, "record", "records"))
	}
	if r.Staged > 0 {
		outf(w, "; %s left under s3://%s/%s (not assets: delete them once no import runs; the lifecycle rule in deploy/ expires them)",
			plural(r.Staged, "staged import copy", "staged import copies"), r.Bucket, storage.StagingPrefix)
	}
	fmt.Fprintln(w, note)
}
