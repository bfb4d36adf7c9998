package main

import (
	"os"
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
