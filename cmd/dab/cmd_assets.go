package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/apiclient"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin/builtin"
	"github.com/dab-assets/dab/internal/storage"
)

func (c *cli) assetsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "assets VERB",
		Short: "list, count, show, download and price assets",
		Long: `List, show and download assets: from the local Redis and store, or through
DAB_SERVER when it is set.`,
		Example: `  dab assets list --type cyoa
  dab assets show 0123456789abcdef0123
  dab assets get 0123456789abcdef0123 -o intro.png`,
	}
	cmd.AddCommand(c.assetsListCmd(), c.assetsShowCmd(), c.assetsGetCmd(), c.assetsCountCmd(), c.assetsPriceCmd())
	return cmd
}

func (c *cli) assetsListCmd() *cobra.Command {
	var (
		assetType, cursor string
		limit             int
		asJSON            bool
	)
	cmd := &cobra.Command{
		Use:   "list [--type TYPE] [--limit N] [--cursor CURSOR] [--json]",
		Short: "list asset records, newest first, a page at a time",
		Long: `List asset records, newest first. When there are more, the last line is the
command that shows the next page (with --json: next_cursor).`,
		Example: `  dab assets list
  dab assets list --type cyoa --limit 20
  dab assets list --json | jq -r '.assets[].id'`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > asset.ListLimitMax {
				return usagef("--limit %d: use 1 to %d", limit, asset.ListLimitMax)
			}
			if assetType != "" {
				if err := builtin.Registry().CheckType(assetType); err != nil {
					return usagef("--type: %v", err)
				}
			}
			return c.withAssets(cmd, args, func(a *app, src *assetSource) error {
				page, err := src.list(cmd.Context(), asset.ListOptions{Type: assetType, Cursor: cursor, Limit: limit})
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
					outf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Type, r.Size, owner, r.CreatedAt.Format(time.DateTime), r.S3Key)
				}
				tw.Flush()
				if page.Next != "" {
					more := "dab assets list"
					if assetType != "" {
						more += " --type " + shellQuote(assetType)
					}
					if limit != asset.ListLimitDefault {
						more += fmt.Sprintf(" --limit %d", limit)
					}
					outf(a.stdout, "more: %s --cursor %s\n", more, shellQuote(page.Next))
				}
				return nil
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&assetType, "type", "", "only assets of this `TYPE` ("+strings.Join(builtin.Registry().Types(), ", ")+")")
	fs.IntVar(&limit, "limit", asset.ListLimitDefault, fmt.Sprintf("`N` records per page (1 to %d)", asset.ListLimitMax))
	fs.StringVar(&cursor, "cursor", "", "continue after a previous page: the `CURSOR` its more: line (or next_cursor) gave")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(builtin.Registry().Types(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (c *cli) assetsShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID|KEY [--json]",
		Short: "show one asset record, by ID or key (type/path)",
		Example: `  dab assets show 0123456789abcdef0123
  dab assets show cyoa/forest/NODE_intro.png     # by key, as dab assets list shows it
  dab assets show 0123456789abcdef0123 --json | jq .metadata`,
		Args:              exactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAssets(cmd, args, func(a *app, src *assetSource) error {
				r, err := src.record(cmd.Context(), args[0])
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
					{"owner", r.Owner}, {"for_sale", forSale(r)}, {"created_at", r.CreatedAt.Format(time.RFC3339)}, {"task_id", r.TaskID},
				} {
					outf(tw, "%s:\t%s\n", kv[0], kv[1])
				}
				keys := make([]string, 0, len(r.Metadata))
				for k := range r.Metadata {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					outf(tw, "metadata.%s:\t%s\n", k, r.Metadata[k])
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// forSale says whether and for what an asset can be bought, by the market
// rules: an owned asset while its owner lists it, at the listing; an
// unowned one once it is priced, at the house's price (a price the record
// still holds after a sale no longer applies).
func forSale(r asset.Record) string {
	switch {
	case r.Owner != "" && r.Listing != nil:
		return fmt.Sprintf("yes, %s: listed by its owner", plural(*r.Listing, "credit", "credits"))
	case r.Owner != "":
		return "no: owned and not listed (its owner lists it: dab listing set " + r.ID + " N)"
	case r.Price != nil:
		return fmt.Sprintf("yes, %s: the house's price", plural(*r.Price, "credit", "credits"))
	}
	return "no: nobody owns it and it has no price (an admin prices it: dab assets price " + r.ID + " N)"
}

func (c *cli) assetsGetCmd() *cobra.Command {
	var (
		output string
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "get ID|KEY [-o FILE] [--force]",
		Short: "download an asset, checked against its record's size and SHA-256",
		Long: `Download an asset: through DAB_SERVER (the owner's bound token or admin; the
bytes come straight from S3 by a presigned URL, the token never goes there)
or locally (Redis and the store's settings). It saves under the asset's name
here (or FILE, or into a folder), never replaces a file without --force, and
checks size and SHA-256 against the record: on a mismatch it exits 1 and
nothing is saved.`,
		Example: `  dab assets get 0123456789abcdef0123
  dab assets get cyoa/forest/NODE_intro.png       # by key, as dab assets list shows it
  dab assets get 0123456789abcdef0123 -o downloads/
  dab assets get 0123456789abcdef0123 -o intro.png --force`,
		Args:              exactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAssets(cmd, args, func(a *app, src *assetSource) error {
				r, err := src.record(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return a.getAsset(cmd.Context(), r, src.open, output, force)
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "save to `FILE`, or into this folder (default: the asset's name in the current folder)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing file")
	return cmd
}

// withAssets runs f with the asset records, read from the local Redis or
// through DAB_SERVER.
func (c *cli) withAssets(cmd *cobra.Command, args []string, f func(*app, *assetSource) error) error {
	a, err := c.app(args, roleClient)
	if err != nil {
		return err
	}
	src, err := a.assetSource(cmd.Context())
	if err != nil {
		return err
	}
	defer src.close()
	return f(a, src)
}

// record reads the record of the asset ref names: its ID, or its key
// (type/path, as dab assets list shows it; the ID is derived from the
// bucket and the key). When there is none, the error says where to look.
func (s *assetSource) record(ctx context.Context, ref string) (asset.Record, error) {
	id := ref
	if !asset.ValidID(ref) {
		typ, p, _ := strings.Cut(ref, "/")
		if key, err := naming.Key(typ, p); err != nil || key != ref {
			return asset.Record{}, fmt.Errorf("%q is neither an asset ID (20 hex digits) nor an asset's key (type/path, such as generic/report.pdf): list them with `dab assets list`", ref)
		}
		bucket, err := s.bucket(ctx)
		if err != nil {
			return asset.Record{}, err
		}
		id = asset.ID(bucket, ref)
	}
	r, err := s.get(ctx, id)
	if errors.Is(err, asset.ErrNotFound) {
		return r, fmt.Errorf("no asset %q: list them with `dab assets list`", ref)
	}
	return r, err
}

// assetSource reads records, and the bytes of assets, from DAB_SERVER or
// from the local Redis (the bytes through a presigned URL either way).
type assetSource struct {
	list func(context.Context, asset.ListOptions) (asset.Page, error)
	get  func(context.Context, string) (asset.Record, error)
	// bucket is the bucket of the records, whose name with the key gives
	// an asset's ID.
	bucket func(context.Context) (string, error)
	open   func(context.Context, asset.Record) (io.ReadCloser, int64, error)
	close  func()
}

func (a *app) assetSource(ctx context.Context) (*assetSource, error) {
	if a.cfg.Server != "" {
		c, err := a.apiClient()
		if err != nil {
			return nil, err
		}
		return &assetSource{
			list: c.Assets,
			get: func(ctx context.Context, id string) (asset.Record, error) {
				r, err := c.Asset(ctx, id)
				var ae *apiclient.Error
				if errors.As(err, &ae) && ae.Status == 404 {
					return r, asset.ErrNotFound
				}
				return r, err
			},
			// A client does not know the server's bucket; every record
			// names it.
			bucket: func(ctx context.Context) (string, error) {
				page, err := c.Assets(ctx, asset.ListOptions{Limit: 1})
				if err != nil || len(page.Records) == 0 {
					return "", errors.Join(err, errors.New("there are no assets yet: list them with `dab assets list`"))
				}
				return page.Records[0].S3Bucket, nil
			},
			open:  func(ctx context.Context, r asset.Record) (io.ReadCloser, int64, error) { return c.Download(ctx, r.ID) },
			close: func() {},
		}, nil
	}
	rdb, err := a.connectRedis(ctx)
	if err != nil {
		return nil, err
	}
	st := a.assets(rdb)
	return &assetSource{
		list:   st.List,
		get:    st.Get,
		bucket: func(context.Context) (string, error) { return a.cfg.S3.Bucket, nil },
		open: func(ctx context.Context, r asset.Record) (io.ReadCloser, int64, error) {
			// Local access (Redis and the store's credentials) is an
			// operator's: no owner check, as for every local verb.
			ps, err := a.presigner()
			if err != nil {
				return nil, 0, err
			}
			su, err := ps.GetURL(ctx, r.S3Bucket, r.S3Key, storage.URLOptions{TTL: a.cfg.DownloadTTL, Filename: r.Name})
			if err != nil {
				return nil, 0, err
			}
			return apiclient.Fetch(ctx, su.URL)
		},
		close: func() { rdb.Close() },
	}, nil
}

// presigner makes presigned URLs with this process's store settings (the
// same client settings as uploads: endpoint, path style, credentials).
func (a *app) presigner() (*storage.Presigner, error) {
	if err := a.cfg.RequireS3(); err != nil {
		return nil, err
	}
	client, err := storage.NewClient(context.Background(), a.cfg.S3)
	if err != nil {
		return nil, err
	}
	return storage.NewPresigner(s3.NewPresignClient(client), a.cfg.S3.Bucket)
}

// errMismatch: downloaded bytes that are not what the record says.
var errMismatch = errors.New("download does not match the asset's record")

// getAsset saves r's bytes to output (a file, a folder for the asset's
// name, or empty: the asset's name here), verified against the record.
// The bytes go to a temporary file beside the target, which becomes the
// target only when size and SHA-256 match: a failed or mismatching download
// leaves nothing, and an existing file is replaced only with force.
func (a *app) getAsset(ctx context.Context, r asset.Record, open func(context.Context, asset.Record) (io.ReadCloser, int64, error), output string, force bool) error {
	dest, err := downloadTarget(r, output)
	if err != nil {
		return err
	}
	if st, err := os.Lstat(dest); err == nil {
		if st.IsDir() {
			return fmt.Errorf("%s is a folder: give a file name with -o", dest)
		}
		if !force {
			return fmt.Errorf("%s exists: give --force to replace it, or -o to save elsewhere", dest)
		}
	}
	body, length, err := open(ctx, r)
	if err != nil {
		return err
	}
	defer body.Close()
	if length >= 0 && length != r.Size {
		return fmt.Errorf("%w: asset %s: the store sends %s, the record says %s (sha256 %s); nothing was saved: the object in the store is not the one recorded, tell an operator",
			errMismatch, r.ID, plural(length, "byte", "bytes"), plural(r.Size, "byte", "bytes"), r.SHA256)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".dab-part-*")
	if err != nil {
		return fmt.Errorf("cannot write beside %s: %w", dest, err)
	}
	kept := false
	defer func() {
		if !kept {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var src io.Reader = body
	if r.Size >= progressMin && isTerminal(a.stderr) {
		bar := newProgressBar(a.stderr, r.Name, r.Size)
		defer bar.done()
		src = &countingReader{r: body, report: bar.update}
	}
	h := sha256.New()
	// One byte past the record's size is enough to know the body is longer.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(src, r.Size+1))
	if err != nil {
		return fmt.Errorf("download of asset %s broke off after %d of %s: %w; nothing was saved, run the command again", r.ID, n, plural(r.Size, "byte", "bytes"), err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != r.Size || sum != r.SHA256 {
		got := plural(n, "byte", "bytes")
		if n > r.Size {
			got = "more than " + plural(r.Size, "byte", "bytes")
		}
		return fmt.Errorf("%w: asset %s: downloaded %s with sha256 %s, the record says %s with sha256 %s; the copy was removed: the object in the store is not the one recorded, tell an operator",
			errMismatch, r.ID, got, sum, plural(r.Size, "byte", "bytes"), r.SHA256)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", dest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dest, err)
	}
	if err := place(tmp.Name(), dest, force); err != nil {
		return err
	}
	kept = true
	outf(a.stdout, "saved %s (%s, sha256 verified)\n", dest, plural(r.Size, "byte", "bytes"))
	return nil
}

// downloadTarget is where `dab assets get` writes: output as given, the
// asset's name inside output when it is a folder, or the asset's name in
// the current folder. The asset's name is reduced to a plain file name, so
// a record can never direct the file elsewhere.
func downloadTarget(r asset.Record, output string) (string, error) {
	name := storage.CleanFilename(r.Name)
	if output != "" {
		st, err := os.Stat(output)
		if err != nil || !st.IsDir() {
			return output, nil
		}
	}
	if name == "" {
		return "", fmt.Errorf("asset %s has no name usable as a file name (%q): give one with -o FILE", r.ID, r.Name)
	}
	if output == "" {
		return name, nil
	}
	return filepath.Join(output, name), nil
}

// place moves the finished temporary file to dest: with a hard link when
// dest must not be replaced (the link fails if dest appeared meanwhile),
// with a rename when it may be. A rename replaces a symbolic link at dest
// itself, never the file it points to.
func place(tmp, dest string, force bool) error {
	if force {
		if err := os.Rename(tmp, dest); err != nil {
			return fmt.Errorf("save %s: %w", dest, err)
		}
		return nil
	}
	err := os.Link(tmp, dest)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s appeared while downloading: give --force to replace it, or -o to save elsewhere", dest)
	}
	if err != nil {
		// Filesystems without hard links: check once more, then rename.
		if _, serr := os.Lstat(dest); serr == nil {
			return fmt.Errorf("%s appeared while downloading: give --force to replace it, or -o to save elsewhere", dest)
		}
		if err := os.Rename(tmp, dest); err != nil {
			return fmt.Errorf("save %s: %w", dest, err)
		}
		return nil
	}
	os.Remove(tmp)
	return nil
}

// countingReader reports the bytes read so far.
type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}

func writeJSON(a *app, v any) error {
	// JSON escapes control characters itself; visibleWriter escapes the
	// others a name may not have (a bidi override), as JSON's \u escapes.
	enc := json.NewEncoder(visibleWriter{a.stdout})
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
