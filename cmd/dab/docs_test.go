package main

import (
	"os"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/config"
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
