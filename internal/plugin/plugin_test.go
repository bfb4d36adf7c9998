package plugin_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/naming"
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/plugin/builtin"
)

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := builtin.Registry()
	if got := strings.Join(r.Types(), ","); got != "cyoa,generic" {
		t.Fatalf("types = %s", got)
	}
	err := r.CheckType("photos")
	if !errors.Is(err, naming.ErrInvalid) || !strings.Contains(err.Error(), "known types are cyoa, generic") {
		t.Fatalf("CheckType(photos) = %v", err)
	}
	if _, err := plugin.NewRegistry(plugin.Generic{}, plugin.Generic{}); err == nil {
		t.Fatal("duplicate plugin accepted")
	}
}

func TestGeneric(t *testing.T) {
	t.Parallel()
	tests := map[string]string{"a.PNG": "png", "noext": "", ".hidden": "", "x.": ""}
	for name, want := range tests {
		md, err := plugin.Generic{}.Derive(context.Background(), plugin.Asset{Name: name})
		if err != nil || md["extension"] != want {
			t.Errorf("Derive(%q) = %v, %v; want extension %q", name, md, err, want)
		}
	}
}
