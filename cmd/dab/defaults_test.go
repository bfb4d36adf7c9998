package main

import (
	"strconv"
	"testing"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/watcher"
	"github.com/dab-assets/dab/watcher/intake"
	"github.com/dab-assets/dab/worker"
)

// TestSettingsShowTheComponentsDefaults: config.Settings sits below the
// worker and the watcher, so it cannot name their ...Default constants;
// here, where configuration meets the components, a test checks that the
// table states them.
func TestSettingsShowTheComponentsDefaults(t *testing.T) {
	t.Parallel()
	want := map[string]string{
		"DAB_SHUTDOWN_TIMEOUT":       worker.ShutdownTimeoutDefault.String(),
		"DAB_FETCHERS":               strconv.Itoa(worker.FetchersDefault),
		"DAB_RESCAN_INTERVAL":        watcher.RescanIntervalDefault.String(),
		"DAB_MAX_UPLOAD_BYTES":       config.FormatBytes(intake.MaxBytesDefault),
		"DAB_MAX_CONCURRENT_UPLOADS": strconv.Itoa(intake.MaxConcurrentDefault),
		"DAB_TUS_EXPIRY":             intake.TusExpiryDefault.String(),
		"DAB_IMPORT_MAX_BYTES":       config.FormatBytes(worker.ImportMaxBytesDefault),
	}
	for _, s := range config.Settings() {
		if w, ok := want[s.Env]; ok {
			if s.Default != w {
				t.Errorf("%s defaults to %q in config.Settings; its component's default is %q", s.Env, s.Default, w)
			}
			delete(want, s.Env)
		}
	}
	for env := range want {
		t.Errorf("config.Settings has no %s", env)
	}
}
