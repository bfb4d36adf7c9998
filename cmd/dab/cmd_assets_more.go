package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/plugin/builtin"
)

func (c *cli) assetsCountCmd() *cobra.Command {
	var assetType string
	cmd := &cobra.Command{
		Use:   "count [--type TYPE]",
		Short: "count asset records",
		Example: `  dab assets count
  dab assets count --type cyoa`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if assetType != "" {
				if err := builtin.Registry().CheckType(assetType); err != nil {
					return usagef("--type: %v", err)
				}
			}
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			n, err := a.countAssets(cmd.Context(), assetType)
			if err != nil {
				return err
			}
			outln(a.stdout, n)
			return nil
		},
	}
	cmd.Flags().StringVar(&assetType, "type", "", "only assets of this `TYPE`")
	return cmd
}

// countAssets counts records: one call to Redis, or through DAB_SERVER the
// pages of the list.
func (a *app) countAssets(ctx context.Context, assetType string) (int64, error) {
	if a.cfg.Server == "" {
		rdb, err := a.connectRedis(ctx)
		if err != nil {
			return 0, err
		}
		defer rdb.Close()
		return a.assets(rdb).Count(ctx, assetType)
	}
	src, err := a.assetSource(ctx)
	if err != nil {
		return 0, err
	}
	defer src.close()
	var n int64
	cursor := ""
	for {
		page, err := src.list(ctx, asset.ListOptions{Type: assetType, Cursor: cursor, Limit: asset.ListLimitMax})
		if err != nil {
			return 0, err
		}
		n += int64(len(page.Records))
		if cursor = page.Next; cursor == "" {
			return n, nil
		}
	}
}

func (c *cli) assetsPriceCmd() *cobra.Command {
	var clear bool
	cmd := &cobra.Command{
		Use:   "price ID CREDITS | price ID --clear",
		Short: "set what the house sells an unowned asset for (admin)",
		Long: `Set the price at which the house sells an asset nobody owns yet (0: free);
--clear takes it off sale. An owned asset is sold only by its owner: see
dab listing. Files from the drop folder carry no price until one is set
here (or they are uploaded with --meta price=N).`,
		Example: `  dab assets price 0123456789abcdef0123 5
  dab assets price 0123456789abcdef0123 --clear`,
		Args: func(cmd *cobra.Command, args []string) error {
			if clear && len(args) != 1 || !clear && len(args) != 2 {
				return usagef("give ID and CREDITS, or ID and --clear")
			}
			return nil
		},
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			var credits int64
			if !clear {
				n, err := strconv.ParseInt(args[1], 10, 64)
				if err != nil || ledger.CheckPrice(n) != nil {
					return usagef("CREDITS %q: give a whole number from 0 (free) to %d", args[1], int64(ledger.CreditsMax))
				}
				credits = n
			}
			a, err := c.app(nil, roleClient)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var rec asset.Record
			if a.cfg.Server != "" {
				cl, err := a.apiClient()
				if err != nil {
					return err
				}
				if clear {
					rec, err = cl.ClearPrice(ctx, args[0])
				} else {
					rec, err = cl.SetPrice(ctx, args[0], credits)
				}
				if err != nil {
					return err
				}
			} else {
				rdb, err := a.connectRedis(ctx)
				if err != nil {
					return err
				}
				defer rdb.Close()
				led := a.ledger(rdb)
				if clear {
					_, err = led.ClearPrice(ctx, args[0], "operator")
				} else {
					_, err = led.SetPrice(ctx, args[0], credits, "operator")
				}
				if err != nil {
					return err
				}
				if rec, err = a.assets(rdb).Get(ctx, args[0]); err != nil {
					return err
				}
			}
			if clear {
				outf(a.stdout, "asset %s (%s) is not for sale by the house\n", rec.ID, rec.Name)
			} else {
				outf(a.stdout, "asset %s (%s) is for sale by the house for %s\n", rec.ID, rec.Name, plural(credits, "credit", "credits"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clear, "clear", false, "take the asset off sale")
	return cmd
}
