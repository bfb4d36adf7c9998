// Command dab banks files as digital assets: it spools them, uploads them to
// S3 through Asynq workers, runs type plugins and records each asset in Redis.
//
// Roles: dab work (the worker), dab watch (the intake), dab serve (both),
// dab dev (everything on one machine). Client commands: dab upload, dab
// assets, dab tasks, dab credits, dab account, dab purchase, dab listing,
// dab ledger, dab reconcile, dab config. The command tree is built by
// newRoot (cli.go) with cobra.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

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

// run runs one command line and returns its exit status: 0 success, 1
// failure (the message names the cause and the fix), 2 a usage error.
func run(ctx context.Context, e *env, args []string) int {
	root := newRoot(e)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errRejected):
		return 1 // the command printed the outcome
	case errors.Is(err, errUsageShown):
		return 2
	case errors.As(err, &usage):
		fmt.Fprintf(e.stderr, "%s: %s\n", cmd.CommandPath(), visibleText(err.Error()))
		return 2
	default:
		fmt.Fprintf(e.stderr, "%s: %s\n", cmd.CommandPath(), visibleText(err.Error()))
		return 1
	}
}

// usageError is a mistake in how dab was called (exit status 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// usagef makes a usageError; %w wraps as in fmt.Errorf.
func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// errUsageShown: the command's help went to stderr instead of a message.
var errUsageShown = usageError{errors.New("usage shown")}

// errRejected makes a rejected purchase exit 1 after its result is printed.
var errRejected = errors.New("the purchase was rejected")
