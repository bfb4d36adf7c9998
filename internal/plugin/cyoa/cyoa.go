// Package cyoa is the plugin for "choose your own adventure" story assets.
// A file's name says its role in the story graph:
//
//	NODE_<id>.ext             a node            (node_id)
//	EDGE_<src>_to_<dst>.ext   an edge src -> dst (src_node, dst_node)
//	HOPTO_<target>.ext        an end that hops to another story or node (hop_target)
//
// An id is one or more letters, digits, '-' or '_' and never contains "_to_".
// A name with one of the prefixes that breaks these rules gets role "invalid"
// and a reason; a name with none of them gets role "unknown". The folder below
// the type folder names the story ("cyoa/forest/NODE_a.png" is in story
// "forest"); files directly in the type folder are in story "default".
package cyoa

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/dab-assets/dab/internal/plugin"
)

// Roles.
const (
	RoleNode    = "node"
	RoleEdge    = "edge"
	RoleEnd     = "end"
	RoleInvalid = "invalid"
	RoleUnknown = "unknown"
)

// DefaultStory holds the files directly in the type folder.
const DefaultStory = "default"

// Info is what a file name says about its place in the story graph.
type Info struct {
	Role      string
	NodeID    string // RoleNode
	SrcNode   string // RoleEdge
	DstNode   string // RoleEdge
	HopTarget string // RoleEnd
	Reason    string // RoleInvalid
}

// Metadata returns the info as plugin metadata (graph_role plus the fields of the role).
func (i Info) Metadata() map[string]string {
	md := map[string]string{"graph_role": i.Role}
	set := func(k, v string) {
		if v != "" {
			md[k] = v
		}
	}
	set("node_id", i.NodeID)
	set("src_node", i.SrcNode)
	set("dst_node", i.DstNode)
	set("hop_target", i.HopTarget)
	set("reason", i.Reason)
	return md
}

const sep = "_to_"

// Parse reads the role from a base file name. It never panics.
func Parse(name string) Info {
	stem := name
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		stem = name[:i]
	}
	invalid := func(format string, args ...any) Info {
		return Info{Role: RoleInvalid, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case strings.HasPrefix(stem, "NODE_"):
		id := stem[len("NODE_"):]
		if err := checkID(id); err != "" {
			return invalid("node id %s; name nodes NODE_<id>.ext", err)
		}
		return Info{Role: RoleNode, NodeID: id}
	case strings.HasPrefix(stem, "EDGE_"):
		rest := stem[len("EDGE_"):]
		if n := countOverlapping(rest, sep); n != 1 {
			return invalid("an edge name must contain %q exactly once, %q has it %d times; name edges EDGE_<src>_to_<dst>.ext", sep, rest, n)
		}
		src, dst, _ := strings.Cut(rest, sep)
		if err := checkID(src); err != "" {
			return invalid("edge source %s", err)
		}
		if err := checkID(dst); err != "" {
			return invalid("edge destination %s", err)
		}
		return Info{Role: RoleEdge, SrcNode: src, DstNode: dst}
	case strings.HasPrefix(stem, "HOPTO_"):
		target := stem[len("HOPTO_"):]
		if err := checkID(target); err != "" {
			return invalid("hop target %s; name ends HOPTO_<target>.ext", err)
		}
		return Info{Role: RoleEnd, HopTarget: target}
	case strings.HasPrefix(stem, "NODE"), strings.HasPrefix(stem, "EDGE"), strings.HasPrefix(stem, "HOPTO"):
		prefix := "NODE"
		if strings.HasPrefix(stem, "EDGE") {
			prefix = "EDGE"
		} else if strings.HasPrefix(stem, "HOPTO") {
			prefix = "HOPTO"
		}
		return invalid("%q starts with %s but not %s_: put an underscore after the prefix", name, prefix, prefix)
	default:
		return Info{Role: RoleUnknown}
	}
}

// checkID returns "" for a valid id, else what is wrong with it.
func checkID(id string) string {
	if id == "" {
		return "is empty"
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Sprintf("%q has the character %q: use letters, digits, '-' and '_'", id, r)
		}
	}
	if strings.Contains(id, sep) {
		return fmt.Sprintf("%q contains %q, which separates edge ends", id, sep)
	}
	return ""
}

// countOverlapping counts occurrences of sub in s, overlapping ones included,
// so "a_to_to_b" counts 2 and is refused as ambiguous.
func countOverlapping(s, sub string) int {
	n := 0
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			n++
		}
	}
	return n
}

// Story returns the story a path below the type folder belongs to: its
// folder, or DefaultStory for files directly in the type folder.
func Story(relPath string) string {
	dir := path.Dir(relPath)
	if dir == "." || dir == "" {
		return DefaultStory
	}
	return dir
}

// Plugin serves the "cyoa" asset type.
type Plugin struct{}

var _ plugin.Plugin = Plugin{}

// Type implements plugin.Plugin.
func (Plugin) Type() string { return "cyoa" }

// Derive implements plugin.Plugin: role metadata plus the story.
func (Plugin) Derive(_ context.Context, a plugin.Asset) (map[string]string, error) {
	md := Parse(a.Name).Metadata()
	md["story"] = Story(a.Path)
	return md, nil
}
