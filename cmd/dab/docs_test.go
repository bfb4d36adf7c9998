package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/webhook"
)

// TestDocsListEverySetting keeps the README's configuration table and the
// sample environment file in step with the settings dab reads.
func TestDocsListEverySetting(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile("../../deploy/dab.env.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range config.Settings() {
		if !strings.Contains(string(readme), "`"+s.Env+"`") || !strings.Contains(string(readme), "`--"+s.Flag+"`") {
			t.Errorf("README.md does not document %s / --%s", s.Env, s.Flag)
		}
		if s.Env != "AWS_SESSION_TOKEN" && !strings.Contains(string(sample), s.Env+"=") {
			t.Errorf("deploy/dab.env.example does not list %s", s.Env)
		}
	}
}

// TestReadmeWebhooksFileParses: the README's example endpoints file is one
// dab accepts.
func TestReadmeWebhooksFileParses(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "`DAB_WEBHOOKS_FILE` lists the endpoints dab delivers events to")
	if !ok {
		t.Fatal("the README has no webhooks section")
	}
	_, rest, _ = strings.Cut(rest, "```\n")
	block, _, _ := strings.Cut(rest, "```")
	eps, err := webhook.Parse(strings.NewReader(block), "README.md", webhook.Options{})
	if err != nil || len(eps) != 2 {
		t.Fatalf("the README's example: %d endpoints, %v", len(eps), err)
	}
}

// TestReadmeLayoutIsTopDown: the README's layout lists every package, and
// no package imports one listed above it (what the section promises a
// reader). The imports are go list's, so the test follows the code.
func TestReadmeLayoutIsTopDown(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)[strings.Index(string(readme), "\n## Layout\n"):]
	_, block, _ := strings.Cut(section, "```\n")
	block, _, _ = strings.Cut(block, "```")
	dirs := regexp.MustCompile(`^((?:\S+/, )*\S+/)\s`) // "a/b/ what it is" or "a/, b/ what they are"
	var order []string
	for _, line := range strings.Split(block, "\n") {
		m := dirs.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, dir := range strings.Split(m[1], ", ") {
			order = append(order, strings.TrimSuffix(dir, "/"))
		}
	}
	// listed returns the position of the most specific entry holding pkg.
	listed := func(pkg string) int {
		best, at := "", -1
		for i, dir := range order {
			if (pkg == dir || strings.HasPrefix(pkg, dir+"/")) && len(dir) > len(best) {
				best, at = dir, i
			}
		}
		return at
	}
	const module = "github.com/dab-assets/dab/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		me := listed(pkg)
		if me < 0 {
			t.Errorf("README's layout does not list %s", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if at := listed(strings.TrimPrefix(imp, module)); at >= 0 && at < me && order[at] != order[me] {
				t.Errorf("%s imports %s, which README's layout lists above it", pkg, strings.TrimPrefix(imp, module))
			}
		}
	}
}
