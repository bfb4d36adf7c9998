// Package plugin defines type plugins: per-asset-type code that derives
// metadata from an uploaded asset. Plugins are idempotent and have no side
// effects beyond the metadata they return, because an upload task can run
// more than once.
package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/dab-assets/dab/internal/naming"
)

// Asset is what a plugin may look at.
type Asset struct {
	// Type is the asset type; Path is the file's path below the type folder
	// ("forest/NODE_a.png"); Name is its base name.
	Type, Path, Name string
	Size             int64
	SHA256           string
	ContentType      string
}

// Plugin derives metadata for the assets of one type.
type Plugin interface {
	// Type is the asset type the plugin serves, a valid naming type.
	Type() string
	// Derive returns metadata for the asset. It must be deterministic for the
	// same asset. An error fails the upload and is retried.
	Derive(ctx context.Context, a Asset) (map[string]string, error)
}

// Registry maps asset types to plugins. It is built once and read-only after.
type Registry struct {
	byType map[string]Plugin
}

// NewRegistry builds a registry; two plugins for one type is an error.
func NewRegistry(plugins ...Plugin) (*Registry, error) {
	r := &Registry{byType: make(map[string]Plugin, len(plugins))}
	for _, p := range plugins {
		t := p.Type()
		if err := naming.ValidateType(t); err != nil {
			return nil, fmt.Errorf("plugin: %w", err)
		}
		if _, dup := r.byType[t]; dup {
			return nil, fmt.Errorf("plugin: two plugins for type %q", t)
		}
		r.byType[t] = p
	}
	return r, nil
}

// Lookup returns the plugin of a type.
func (r *Registry) Lookup(assetType string) (Plugin, bool) {
	p, ok := r.byType[assetType]
	return p, ok
}

// Types lists the registered types, sorted.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.byType))
	for t := range r.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// CheckType returns an error naming the known types when t is not registered.
func (r *Registry) CheckType(t string) error {
	if err := naming.ValidateType(t); err != nil {
		return err
	}
	if _, ok := r.byType[t]; !ok {
		return fmt.Errorf("%w: unknown asset type %q: known types are %s", naming.ErrInvalid, t, strings.Join(r.Types(), ", "))
	}
	return nil
}

// DefaultType is the type of a file that names none (a file directly in the
// drop folder, an upload without a type).
const DefaultType = "generic"

// Generic serves the "generic" type: any file, no derived metadata beyond
// its extension.
type Generic struct{}

// Type implements Plugin.
func (Generic) Type() string { return DefaultType }

// Derive implements Plugin.
func (Generic) Derive(_ context.Context, a Asset) (map[string]string, error) {
	md := map[string]string{}
	if i := strings.LastIndexByte(a.Name, '.'); i > 0 && i < len(a.Name)-1 {
		md["extension"] = strings.ToLower(a.Name[i+1:])
	}
	return md, nil
}
