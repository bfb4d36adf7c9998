package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dab-assets/dab/internal/config"
)

// cli is what every command's builder needs: the outside world and the
// loader that the global settings' flags write into.
type cli struct {
	*env
	loader *config.Loader
}

// app loads the configuration for a command of role r with its positional
// arguments (see newApp).
func (c *cli) app(args []string, r role) (*app, error) {
	return newApp(c.env, c.loader, args, r)
}

// newRoot builds dab's command tree for one run. The settings of package
// config are flags of every command (persistent flags of the root), hidden
// from each command's help: `dab help config` lists them.
func newRoot(e *env) *cobra.Command {
	c := &cli{env: e, loader: config.NewLoader(e.getenv)}
	root := &cobra.Command{
		Use:   "dab COMMAND",
		Short: "Digital Asset Banking: bank files as assets in S3, sell them for credits",
		Long: `dab: Digital Asset Banking

dab banks files as digital assets: it spools them, uploads them to S3
through Asynq workers, runs the asset type's plugin and records each asset
in Redis. Buyers spend credits on assets through a double-entry ledger.`,
		Example: `  dab dev                                     # everything on this machine
  dab upload NODE_intro.png --type cyoa --wait  # in another terminal, same folder
  dab assets list
  dab completion bash > ~/.local/share/bash-completion/completions/dab`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	c.loader.RegisterFlags(root.PersistentFlags())
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) { f.Hidden = true })
	root.AddGroup(
		&cobra.Group{ID: "roles", Title: "Run dab (until stopped):"},
		&cobra.Group{ID: "assets", Title: "Assets:"},
		&cobra.Group{ID: "credits", Title: "Credits:"},
		&cobra.Group{ID: "other", Title: "Other:"},
	)
	for _, g := range []struct {
		id   string
		cmds []*cobra.Command
	}{
		{"roles", []*cobra.Command{c.workCmd(), c.watchCmd(), c.serveCmd(), c.devCmd()}},
		{"assets", []*cobra.Command{c.uploadCmd(), c.importCmd(), c.assetsCmd(), c.tasksCmd(), c.reconcileCmd()}},
		{"credits", []*cobra.Command{c.creditsCmd(), c.accountCmd(), c.purchaseCmd(), c.listingCmd(), c.ledgerCmd()}},
		{"other", []*cobra.Command{c.configCmd()}},
	} {
		for _, cmd := range g.cmds {
			cmd.GroupID = g.id
			root.AddCommand(cmd)
		}
	}
	root.SetHelpCommand(helpCmd(root))
	root.SetHelpCommandGroupID("other")
	root.SetCompletionCommandGroupID("other")
	root.InitDefaultCompletionCmd()
	describeCompletion(root)
	root.SetUsageTemplate(usageTemplate)
	root.SetFlagErrorFunc(flagError)
	finish(root)
	return root
}

// usageTemplate: a command's own flags first, then its examples and verbs;
// the global settings are pointed to, not listed.
const usageTemplate = `Usage:
  {{.UseLine}}{{if .HasAvailableLocalFlags}}

Flags:
{{.LocalFlags.FlagUsagesWrapped 100 | trimTrailingWhitespaces}}{{end}}{{if .HasExample}}

Examples:
{{.Example}}{{end}}{{if .HasAvailableSubCommands}}{{$cmds := .Commands}}{{if eq (len .Groups) 0}}

Commands:{{range $cmds}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{else}}{{range $group := .Groups}}

{{.Title}}{{range $cmds}}{{if (and (eq .GroupID $group.ID) (or .IsAvailableCommand (eq .Name "help")))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}{{end}}

Run "{{.CommandPath}} COMMAND --help" for a command's flags and examples.{{end}}

Settings (Redis, S3, folders, tokens, logs) are environment variables and
flags of every command: "dab help config" lists them, "dab config" shows
their values.
`

// finish applies dab's conventions to every command below root: a command
// with verbs shows its help when called without one and names an unknown
// verb with suggestions; a wrong number of arguments is a usage error; the
// synopsis (Use) names the flags itself.
func finish(cmd *cobra.Command) {
	cmd.DisableFlagsInUseLine = true
	cmd.SuggestionsMinimumDistance = 2 // "pruchase": did you mean purchase?
	for _, sub := range cmd.Commands() {
		finish(sub)
	}
	if cmd.HasSubCommands() {
		cmd.Args, cmd.RunE, cmd.Run = verbArgs, showUsage, nil
		return
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			err := check(c, args)
			var u usageError
			if err != nil && !errors.As(err, &u) {
				return usageError{fmt.Errorf("%w; usage: %s", err, c.UseLine())}
			}
			return err
		}
	}
}

// verbArgs refuses a word that names no verb of c.
func verbArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return unknownCommand(c, args[0])
	}
	return nil
}

// showUsage answers a command that needs a verb and got none: one line
// naming its verbs; bare dab prints its help (to stderr), as it has no
// shorter answer.
func showUsage(c *cobra.Command, _ []string) error {
	if c.HasParent() {
		var verbs []string
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				verbs = append(verbs, sub.Name())
			}
		}
		return usagef("name a verb: %s; see %s --help", strings.Join(verbs, ", "), c.CommandPath())
	}
	c.SetOut(c.ErrOrStderr())
	if err := c.Help(); err != nil {
		return err
	}
	return errUsageShown
}

func unknownCommand(c *cobra.Command, name string) error {
	what := "command"
	if c.HasParent() {
		what = "verb"
	}
	hint := ""
	if s := c.SuggestionsFor(name); len(s) > 0 {
		hint = "did you mean " + strings.Join(s, " or ") + "? "
	}
	return usagef("unknown %s %q: %ssee %s --help", what, name, hint, c.CommandPath())
}

// flagError turns pflag's errors into one line that names the fix.
func flagError(c *cobra.Command, err error) error {
	if c.HasSubCommands() && c.Flags().NArg() > 0 {
		// `dab pruchase --asset X`: the command is what is wrong.
		return unknownCommand(c, c.Flags().Arg(0))
	}
	see := func(f *pflag.Flag) string {
		if f != nil && f.Hidden {
			return "see dab help config"
		}
		return "see " + c.CommandPath() + " --help"
	}
	var (
		notExist *pflag.NotExistError
		invalid  *pflag.InvalidValueError
		required *pflag.ValueRequiredError
	)
	switch {
	case errors.As(err, &notExist) && notExist.GetSpecifiedShortnames() == "":
		name := notExist.GetSpecifiedName()
		if near := nearestFlag(c, name); near != "" {
			return usagef("unknown flag --%s: did you mean --%s? %s", name, near, see(c.Flags().Lookup(near)))
		}
		return usagef("unknown flag --%s: %s", name, see(nil))
	case errors.As(err, &invalid):
		return usagef("--%s %q: %v; %s", invalid.GetFlag().Name, invalid.GetValue(), invalid.Unwrap(), see(invalid.GetFlag()))
	case errors.As(err, &required):
		return usagef("%v; %s", err, see(required.GetFlag()))
	}
	return usagef("%v; %s", err, see(nil))
}

// nearestFlag is the flag of c (its own or a global setting) closest to
// name, when it is close enough to be a typo.
func nearestFlag(c *cobra.Command, name string) string {
	best, bestDist := "", 3
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// exactArgs wants n arguments.
func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("wants %s, got %d", plural(n, "argument", "arguments"), len(args))
		}
		return nil
	}
}

// noArgs: the command takes flags only.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("takes no arguments, got %q", args)
	}
	return nil
}

// helpCmd replaces cobra's help command: `dab help config` lists the
// settings (the word config also names the command that prints their
// values), `dab help COMMAND...` shows a command's help.
func helpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND [VERB] | config]",
		Short: `a command's help; "help config": every setting with its variable, flag and default`,
		Example: `  dab help purchase
  dab help assets get
  dab help config`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 && args[0] == "config" {
				return writeSettingsHelp(c.OutOrStdout())
			}
			target, rest, err := root.Find(args)
			if err != nil {
				return usageError{err}
			}
			if len(rest) > 0 {
				return unknownCommand(target, rest[0])
			}
			target.SetOut(c.OutOrStdout())
			return target.Help()
		},
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			parent, _, err := root.Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []cobra.Completion
			if len(args) == 0 {
				names = append(names, cobra.CompletionWithDesc("config", "every setting with its variable, flag and default"))
			}
			for _, sub := range parent.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// describeCompletion gives cobra's completion command and its shells dab's
// synopsis and examples.
func describeCompletion(root *cobra.Command) {
	comp, _, err := root.Find([]string{"completion"})
	if err != nil || comp == root {
		panic("dab: no completion command") // a programming error
	}
	comp.Use = "completion SHELL"
	comp.Short = "print the shell completion script for bash, zsh, fish or powershell"
	comp.Example = `  source <(dab completion bash)      # bash, this shell only
  dab completion zsh > "${fpath[1]}/_dab"
  dab completion fish > ~/.config/fish/completions/dab.fish`
	for _, sh := range comp.Commands() {
		sh.Use = sh.Name() + " [--no-descriptions]"
		sh.Short = "print the completion script for " + sh.Name()
		sh.Example = fmt.Sprintf("  dab completion %s > dab.%s-completion   # then see the help above for where it goes", sh.Name(), sh.Name())
	}
}

// writeSettingsHelp prints every setting of package config, by group: its
// variable, flag, default and meaning.
func writeSettingsHelp(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`dab's settings

Each setting is an environment variable and a flag of every command (the
flag wins); values are checked at start and an error names the variable.
"dab config" prints the values in effect and where each came from. Sizes
take KiB, MiB or GiB (and KB, MB, GB); durations look like 500ms, 30s, 2m.
A command run where a "dab dev" runs (same DAB_DATA_DIR) uses its Redis,
store and token unless DAB_REDIS_URL, AWS_S3_BUCKET or AWS_ENDPOINT_URL_S3
is given.
`)
	settings := config.Settings()
	var groups []string
	seen := map[string]bool{}
	for _, s := range settings {
		if !seen[s.Group] {
			seen[s.Group] = true
			groups = append(groups, s.Group)
		}
	}
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s:\n", g)
		for _, s := range settings {
			if s.Group != g {
				continue
			}
			def := "default " + s.Default
			if s.Default == "" {
				def = "no default"
			}
			flagForm := "--" + s.Flag + " VALUE"
			if s.IsBool() {
				flagForm = "--" + s.Flag
			}
			secret := ""
			if s.Secret {
				secret = ", secret: masked by dab config"
			}
			fmt.Fprintf(&b, "  %s, %s (%s%s)\n", s.Env, flagForm, def, secret)
			wrap(&b, s.Usage, "      ", 80)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap writes text in lines of at most width columns, each indented.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
}

// plural is "1 credit", "2 credits".
func plural[N ~int | ~int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// shellQuote quotes s for a POSIX shell when it needs quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:@%,=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
