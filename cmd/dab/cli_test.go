package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/harness"
)

// runIn runs a dab command line in this process with environment vars and
// returns stdout, stderr and the exit status.
func runIn(t *testing.T, vars map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb harness.LogBuffer
	code := run(context.Background(), &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}, args)
	return out.String(), errb.String(), code
}

// commandPaths lists every command of the tree as its words after "dab".
func commandPaths(c *cobra.Command, prefix []string) [][]string {
	var out [][]string
	for _, sub := range c.Commands() {
		if sub.Hidden || sub.Name() == cobra.ShellCompRequestCmd {
			continue
		}
		p := append(append([]string{}, prefix...), sub.Name())
		out = append(out, p)
		out = append(out, commandPaths(sub, p)...)
	}
	return out
}

// TestEveryCommandIsDescribed: every command and verb has a one-line
// summary, a synopsis, examples and its own flags described (flag help
// names the argument on purpose, never by a stray back-quoted phrase).
func TestEveryCommandIsDescribed(t *testing.T) {
	t.Parallel()
	root := newRoot(&env{getenv: func(string) string { return "" }})
	root.InitDefaultHelpCmd()
	paths := commandPaths(root, nil)
	want := []string{"work", "watch", "serve", "dev", "upload", "assets list", "assets show", "assets get", "tasks show",
		"credits grant", "account show", "purchase", "ledger verify", "ledger rebuild-sales", "ledger restore",
		"listing set", "listing remove", "config", "reconcile", "completion", "completion bash", "completion zsh",
		"completion fish", "help"}
	have := map[string]bool{}
	for _, p := range paths {
		have[strings.Join(p, " ")] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("no command dab %s", w)
		}
	}
	for _, p := range paths {
		cmd, _, err := root.Find(p)
		if err != nil {
			t.Fatal(err)
		}
		name := "dab " + strings.Join(p, " ")
		if cmd.Short == "" || strings.Contains(cmd.Short, "\n") {
			t.Errorf("%s: Short %q is not one line", name, cmd.Short)
		}
		if cmd.Example == "" {
			t.Errorf("%s has no examples", name)
		}
		if !strings.HasPrefix(cmd.UseLine(), name) {
			t.Errorf("%s: synopsis %q", name, cmd.UseLine())
		}
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if arg, _ := pflag.UnquoteUsage(f); strings.Contains(arg, " ") {
				t.Errorf("%s --%s: its help names the argument %q", name, f.Name, arg)
			}
		})
	}
}

// TestHelpShowsOwnFlags: a command's help shows its own flags first and
// keeps the global settings out; `dab help config` lists all of them.
func TestHelpShowsOwnFlags(t *testing.T) {
	t.Parallel()
	out, errOut, code := runIn(t, nil, "purchase", "--help")
	if code != 0 || errOut != "" {
		t.Fatalf("dab purchase --help: exit %d\n%s", code, errOut)
	}
	flags := out[strings.Index(out, "\nFlags:\n"):]
	if !strings.HasPrefix(out[strings.Index(out, "Usage:"):], "Usage:\n  dab purchase --asset ID") || strings.Index(out, "Flags:") > strings.Index(out, "Examples:") {
		t.Errorf("synopsis, then own flags, then examples:\n%s", out)
	}
	for _, want := range []string{"--asset ID", "--buyer ACCOUNT", "--credits N", "--key KEY", "--timeout DURATION", "--json", `"dab help config"`} {
		if !strings.Contains(flags, want) {
			t.Errorf("dab purchase --help lacks %q:\n%s", want, out)
		}
	}
	for _, s := range config.Settings() {
		if strings.Contains(out, "--"+s.Flag+" ") {
			t.Errorf("dab purchase --help lists the global setting --%s", s.Flag)
		}
	}
	if n := strings.Count(out, "\n  -") + strings.Count(out, "\n      --"); n > 10 {
		t.Errorf("dab purchase --help lists %d flags:\n%s", n, out)
	}

	out, _, code = runIn(t, nil, "help", "config")
	if code != 0 {
		t.Fatalf("dab help config: exit %d", code)
	}
	for _, s := range config.Settings() {
		if !strings.Contains(out, s.Env+", --"+s.Flag) {
			t.Errorf("dab help config does not list %s / --%s", s.Env, s.Flag)
		}
	}
	for _, want := range []string{"Redis:\n", "S3:\n", "(default 25s)", "DAB_REDIS_URL, --redis-url VALUE (no default)", "DAB_POLL, --poll (default false)"} {
		if !strings.Contains(out, want) {
			t.Errorf("dab help config lacks %q", want)
		}
	}
	if cfgHelp, _, _ := runIn(t, nil, "config", "--help"); !strings.Contains(cfgHelp, "dab help config") {
		t.Errorf("dab config --help does not point to dab help config:\n%s", cfgHelp)
	}
}

// TestUsageErrors: unknown commands, verbs and flags, and wrong arguments,
// exit 2 with one line that names the fix.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"pruchase"}, `dab: unknown command "pruchase": did you mean purchase? see dab --help`},
		{[]string{"pruchase", "--asset", "x"}, `unknown command "pruchase": did you mean purchase?`},
		{[]string{"asets", "list"}, "did you mean assets?"},
		{[]string{"assets", "lsit"}, `dab assets: unknown verb "lsit": did you mean list? see dab assets --help`},
		{[]string{"ledger", "verfy"}, "did you mean verify?"},
		{[]string{"purchase", "--byer", "amy"}, "dab purchase: unknown flag --byer: did you mean --buyer? see dab purchase --help"},
		{[]string{"upload", "f", "--redis-ur", "x"}, "did you mean --redis-url? see dab help config"},
		{[]string{"work", "--concurrency", "many"}, `dab work: --concurrency "many": "many" is not a whole number; see dab help config`},
		{[]string{"upload", "f", "--timeout", "soon"}, `--timeout "soon"`},
		{[]string{"upload"}, "dab upload: name at least one file; usage: dab upload FILE..."},
		{[]string{"assets", "get"}, "usage: dab assets get ID|KEY [-o FILE] [--force]"},
		{[]string{"tasks", "show", "a", "b"}, "dab tasks show: wants 1 argument, got 2"},
		{[]string{"credits", "grant", "amy"}, "wants 2 arguments, got 1"},
		{[]string{"work", "now"}, `dab work: takes no arguments, got ["now"]`},
		{[]string{"purchase", "--credits", "1", "--buyer", "amy"}, "--asset is required"},
		// No default price: a purchase names what it pays, even 0.
		{[]string{"purchase", "--asset", "0123456789abcdef0123", "--buyer", "amy"}, "dab purchase: --credits is required"},
		{[]string{"assets"}, "dab assets: name a verb: count, get, list, price, show; see dab assets --help"},
		{[]string{"tasks"}, "dab tasks: name a verb: show; see dab tasks --help"},
		{[]string{"ledger"}, "dab ledger: name a verb:"},
		{[]string{"purchase", "--asset", "0123456789abcdef0123", "--credits", "1"}, "dab purchase: --buyer is required"},
		{[]string{"assets", "list", "--type", "images"}, `unknown asset type "images": known types are cyoa, generic`},
		{[]string{"upload", "f.bin", "--type", "images"}, `dab upload: --type: invalid: unknown asset type "images"`},
		{[]string{"assets", "list", "--limit", "0"}, "--limit 0: use 1 to 1000"},
		{[]string{"help", "frob"}, `unknown command "frob"`},
		{[]string{"completion", "tcsh"}, `unknown verb "tcsh"`},
	}
	for _, tt := range tests {
		out, errOut, code := runIn(t, nil, tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) || strings.Count(errOut, "\n") != 1 || out != "" {
			t.Errorf("dab %s: exit %d\nstdout %q\nstderr %q\nwant exit 2 and one line with %q", strings.Join(tt.args, " "), code, out, errOut, tt.want)
		}
	}
	// Without a command: the help, on stderr.
	for _, args := range [][]string{nil, {"--poll"}} {
		out, errOut, code := runIn(t, nil, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "Usage:") {
			t.Errorf("dab %v: exit %d, stdout %q, stderr %q; want 2 and the help on stderr", args, code, out, errOut)
		}
	}
}

// TestHelp: help goes to stdout with exit 0, in every form.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"help", "assets", "get"}, {"assets", "get", "--help"}, {"help", "credits"}} {
		out, errOut, code := runIn(t, nil, args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Errorf("dab %v: exit %d, stderr %q", args, code, errOut)
		}
	}
	if out, _, _ := runIn(t, nil, "help"); !strings.Contains(out, "dab: Digital Asset Banking") || !strings.Contains(out, "purchase") {
		t.Errorf("dab help:\n%s", out)
	}
	if out, _, _ := runIn(t, nil, "help", "assets", "get"); !strings.Contains(out, "dab assets get ID|KEY [-o FILE] [--force]") {
		t.Errorf("dab help assets get:\n%s", out)
	}
}

// TestCompletion: the completion scripts, and completions of commands,
// verbs and flag values.
func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runIn(t, nil, "completion", sh)
		if code != 0 || errOut != "" || !strings.Contains(out, "dab") || len(out) < 1000 {
			t.Errorf("dab completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), errOut)
		}
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "pur"}, []string{"purchase"}},
		{[]string{"__complete", "assets", ""}, []string{"list", "show", "get"}},
		{[]string{"__complete", "upload", "f", "--type", ""}, []string{"cyoa", "generic"}},
		{[]string{"__complete", "help", "led"}, []string{"ledger"}},
		{[]string{"__complete", "purchase", "--bu"}, []string{"--buyer"}},
	} {
		out, _, code := runIn(t, nil, tt.args...)
		for _, w := range tt.want {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("dab %v: exit %d, want %q among:\n%s", tt.args, code, w, out)
			}
		}
	}
}

// TestGlobalSettingsOnEveryCommand: the settings stay flags of every
// command, before or after its arguments, and win over the environment.
func TestGlobalSettingsOnEveryCommand(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"DAB_KEY_PREFIX": "env:"}
	out, errOut, code := runIn(t, vars, "config", "--key-prefix", "flag:", "--poll", "--log-level=debug")
	if code != 0 {
		t.Fatalf("dab config: exit %d %s", code, errOut)
	}
	for _, want := range []string{"flag:", "DAB_POLL", "true"} {
		if !strings.Contains(out, want) {
			t.Errorf("dab config lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && (f[0] == "DAB_KEY_PREFIX" || f[0] == "DAB_POLL" || f[0] == "DAB_LOG_LEVEL") && f[3] != "flag" {
			t.Errorf("%s came from %s, want flag", f[0], f[3])
		}
	}
	if _, errOut, code := runIn(t, map[string]string{"DAB_LOG_FORMAT": "xml"}, "config"); code != 1 || !strings.Contains(errOut, `DAB_LOG_FORMAT: "xml": use json or text`) {
		t.Errorf("DAB_LOG_FORMAT=xml: exit %d %s", code, errOut)
	}
}

// TestPlural: counts of one take the singular.
func TestPlural(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 credits", 1: "1 credit", 2: "2 credits", -1: "-1 credits"} {
		if got := plural(n, "credit", "credits"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"/srv/dab-data": "/srv/dab-data", "/tmp/my data": "'/tmp/my data'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestForSale: dab assets show says whether an asset can be bought and for
// what, by the market rules; a price left on a sold asset does not count.
func TestForSale(t *testing.T) {
	t.Parallel()
	n := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		r    asset.Record
		want string
	}{
		{asset.Record{ID: "a"}, "no: nobody owns it and it has no price (an admin prices it: dab assets price a N)"},
		{asset.Record{ID: "a", Price: n(3)}, "yes, 3 credits: the house's price"},
		{asset.Record{ID: "a", Price: n(0)}, "yes, 0 credits: the house's price"},
		{asset.Record{ID: "a", Owner: "alice", Price: n(5)}, "no: owned and not listed (its owner lists it: dab listing set a N)"},
		{asset.Record{ID: "a", Owner: "alice", Price: n(5), Listing: n(1)}, "yes, 1 credit: listed by its owner"},
	} {
		if got := forSale(tc.r); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.r, got, tc.want)
		}
	}
}

// TestConfigShowsWhatEmptyMeans: dab config shows where the failed folder
// is when DAB_FAILED_DIR is not set, and what an empty DAB_DONE_DIR does.
func TestConfigShowsWhatEmptyMeans(t *testing.T) {
	t.Parallel()
	out, errOut, code := runIn(t, map[string]string{"DAB_DATA_DIR": "/srv/dab"}, "config")
	if code != 0 {
		t.Fatalf("dab config: exit %d %s", code, errOut)
	}
	for _, want := range []string{"/srv/dab/failed (<data dir>/failed)", "- (uploaded originals are deleted)"} {
		if !strings.Contains(out, want) {
			t.Errorf("dab config lacks %q:\n%s", want, out)
		}
	}
}
