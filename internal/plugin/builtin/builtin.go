// Package builtin assembles the registry of the plugins that ship with dab.
package builtin

import (
	"github.com/dab-assets/dab/internal/plugin"
	"github.com/dab-assets/dab/internal/plugin/cyoa"
)

// Registry returns a new registry of the built-in plugins: generic and cyoa.
func Registry() *plugin.Registry {
	r, err := plugin.NewRegistry(plugin.Generic{}, cyoa.Plugin{})
	if err != nil {
		panic("builtin plugins: " + err.Error()) // fixed list: only a programming error gets here
	}
	return r
}
