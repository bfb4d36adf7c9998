// Command dab banks files as digital assets: it spools them, uploads them to
// S3 through Asynq workers, runs type plugins and records each asset in Redis.
//
// Roles: dab work (the worker), dab dev (everything on one machine).
// Client verbs: dab upload, dab assets, dab config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"work":      {"run a worker: upload spooled files to S3, run plugins, record assets", runWork},
		"watch":     {"run the intake: the drop-folder watcher and the HTTP API, console and monitor", runWatch},
		"serve":     {"run the watcher, the HTTP API (console, monitor) and a worker in one process", runServe},
		"dev":       {"run everything on this machine with a local Redis and S3-compatible store", runDev},
		"upload":    {"spool files and queue their upload: dab upload FILE... --type TYPE", runUpload},
		"assets":    {"list, show and download assets: dab assets list | show ID | get ID [-o FILE]", runAssets},
		"tasks":     {"show a task's state: dab tasks show ID", runTasks},
		"credits":   {"grant credits: dab credits grant ACCOUNT N [--key K]", runCredits},
		"account":   {"show a balance and its entries: dab account show ACCOUNT", runAccount},
		"purchase":  {"buy an asset: dab purchase --asset ID [--buyer B] --credits N [--key K]", runPurchase},
		"ledger":    {"check or restore the books: dab ledger verify [--journal] | rebuild-sales | restore [--force]", runLedger},
		"listing":   {"sell an owned asset: dab listing set ID CREDITS | remove ID", runListing},
		"config":    {"print the effective configuration, secrets masked", runConfig},
		"reconcile": {"rebuild asset records from the bucket: dab reconcile [--prefix P] [--dry-run] [--json]", runReconcile},
	}
}

// env is what a command may touch of the outside world; tests supply their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, e *env, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(e.stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "dab: unknown command %q\n\n", args[0])
		usage(e.stderr, cmds)
		return 2
	}
	err := c.run(ctx, e, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errRejected):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "dab %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(e.stderr, "dab %s: %v\n", args[0], err)
		return 1
	}
}

// errUsage marks errors in how a command was called (exit status 2).
var errUsage = errors.New("usage")

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "dab: Digital Asset Banking\n\nUsage: dab COMMAND [flags] [args]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s %s\n", width, n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun `dab COMMAND -h` for a command's flags. Every flag also has an environment variable; see `dab config`.")
}
