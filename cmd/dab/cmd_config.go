package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

// runConfig prints every setting with its value (secrets masked) and where
// the value came from.
func runConfig(_ context.Context, e *env, args []string) error {
	a, err := e.parse("config", args, nil)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tFLAG\tVALUE\tFROM")
	for _, l := range a.cfg.Effective() {
		v := l.Value
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Env, l.Flag, v, l.Source)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if a.dev != nil {
		fmt.Fprintf(a.stdout, "\nFollowing the `dab dev` running as pid %d (data dir %s).\n", a.dev.PID, a.cfg.DataDir)
	}
	return nil
}
