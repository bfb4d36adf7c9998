package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (c *cli) configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "print the effective configuration, where each value came from, secrets masked",
		Long: `Print every setting's value in effect (secrets masked) and where it came
from: default, env, flag, or dev (a running dab dev this command follows).
What each setting means, its flag and its default: dab help config.`,
		Example: `  dab config
  DAB_DATA_DIR=/srv/dab dab config --redis-url redis://10.0.0.5:6379/0`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.app(args, roleClient)
			if err != nil {
				return err
			}
			return a.printConfig()
		},
	}
}

// printConfig prints every setting with its value (secrets masked) and
// where the value came from.
func (a *app) printConfig() error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tFLAG\tVALUE\tFROM")
	// What an empty value of these means, shown instead of "-".
	empty := map[string]string{
		"DAB_FAILED_DIR": a.cfg.FailedRoot() + " (<data dir>/failed)",
		"DAB_DONE_DIR":   "- (uploaded originals are deleted)",
	}
	for _, l := range a.cfg.Effective() {
		v := l.Value
		if v == "" {
			v = "-"
			if e, ok := empty[l.Env]; ok {
				v = e
			}
		}
		outf(tw, "%s\t%s\t%s\t%s\n", l.Env, l.Flag, v, l.Source)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if a.dev != nil {
		outf(a.stdout, "\nFollowing the `dab dev` running as pid %d (data dir %s).\n", a.dev.PID, a.cfg.DataDir)
	}
	if a.cfg.RedisURL == "" && a.cfg.Server == "" {
		outf(a.stdout, "\nNo Redis: %v.\n", a.noRedis())
	}
	return nil
}
