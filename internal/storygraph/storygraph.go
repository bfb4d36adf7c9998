// Package storygraph draws a CYOA story graph (cyoa.Graph) as SVG with
// Graphviz's dot layout, through github.com/goccy/go-graphviz: Graphviz
// compiled to WebAssembly and run in-process, so nothing needs installing
// and the page needs no JavaScript. dot routes every edge around the boxes
// (cycles, back and cross edges, self loops) and ends each with an
// arrowhead; the hand-made column layout it replaces drew back edges under
// the boxes.
package storygraph

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/goccy/go-graphviz"

	"github.com/dab-assets/dab/internal/plugin/cyoa"
	"github.com/dab-assets/dab/internal/wasmcache"
)

// go-graphviz, initialized before this package, compiled its WebAssembly
// with TMPDIR pointing at the user's own cache folder (wasmcache); the
// rest of the process gets TMPDIR back.
func init() { wasmcache.Restore() }

// Links makes the URLs that nodes, edges and ends link to.
type Links struct {
	// Asset is the page of an asset (a node's, an edge's or an end's file).
	Asset func(assetID string) string
	// Story is the page of another story (an end that hops out of this one).
	Story func(story string) string
}

// Renderer turns graphs into SVG. It starts Graphviz on first use.
type Renderer struct {
	gv *graphviz.Graphviz // guarded by graphvizMu
}

// graphvizMu serializes every use of go-graphviz in the process: the
// library keeps one WebAssembly module and its plugin tables in package
// variables, shared by all its instances, so two renders at once (two
// Renderers, or two requests) would race inside it. It is the lock of that
// outside state, not state of this package.
var graphvizMu sync.Mutex

// Close releases Graphviz.
func (r *Renderer) Close() error {
	graphvizMu.Lock()
	defer graphvizMu.Unlock()
	if r.gv == nil {
		return nil
	}
	err := r.gv.Close()
	r.gv = nil
	return err
}

// SVG lays g out and returns an <svg> element to put into a page as is:
// every text in it is escaped by Graphviz, and every link is one of links'.
func (r *Renderer) SVG(ctx context.Context, g cyoa.Graph, links Links) (string, error) {
	dot := DOT(g, links)
	graphvizMu.Lock()
	defer graphvizMu.Unlock()
	if r.gv == nil {
		gv, err := graphviz.New(ctx)
		if err != nil {
			return "", fmt.Errorf("storygraph: start graphviz: %w", err)
		}
		r.gv = gv
	}
	graph, err := graphviz.ParseBytes([]byte(dot))
	if err != nil {
		return "", fmt.Errorf("storygraph: story %q: %w", g.Story, err)
	}
	defer graph.Close()
	var buf bytes.Buffer
	if err := r.gv.Render(ctx, graph, graphviz.SVG, &buf); err != nil {
		return "", fmt.Errorf("storygraph: story %q: render: %w", g.Story, err)
	}
	out := buf.String()
	// Only the element: no XML declaration, doctype or comments.
	i := strings.Index(out, "<svg")
	if i < 0 {
		return "", fmt.Errorf("storygraph: story %q: graphviz gave no <svg>", g.Story)
	}
	return out[i:], nil
}

// Colors of the drawing; the console's legend shows the same.
const (
	colorNode        = "#3366cc"
	fillNode         = "#eef4ff"
	colorStart       = "#117733"
	fillStart        = "#e8f7ec"
	colorMissing     = "#cc0000"
	fillMissing      = "#fff0f0"
	colorUnreachable = "#cc6600"
	fillUnreachable  = "#fff7e6"
	colorEnd         = "#117733"
	fillEnd          = "#f0fff0"
	colorEdge        = "#444444"
)

// DOT writes g in the DOT language. Node names in it are n0, n1, ...
// (never user input); labels and tooltips are quoted and escaped, and the
// SVG ids of the elements are node-<id>, edge-<i> and end-<i> (tests and
// the console find them by these).
func DOT(g cyoa.Graph, links Links) string {
	var b strings.Builder
	b.WriteString("digraph story {\n")
	b.WriteString("  graph [rankdir=LR, nodesep=0.35, ranksep=0.55, bgcolor=\"transparent\", fontname=\"sans-serif\"];\n")
	fmt.Fprintf(&b, "  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\", fontsize=12, color=%q, fillcolor=%q, penwidth=1.5];\n", colorNode, fillNode)
	fmt.Fprintf(&b, "  edge [color=%q, arrowsize=0.8, penwidth=1.3];\n", colorEdge)
	names := map[string]string{}
	for i, n := range g.Nodes {
		name := fmt.Sprintf("n%d", i)
		names[n.ID] = name
		attrs := []string{"id=" + quote("node-"+n.ID)}
		switch {
		case n.Missing:
			attrs = append(attrs, "label="+quote(n.ID+"\n(missing)"), `style="rounded,filled,dashed"`,
				"color="+quote(colorMissing), "fillcolor="+quote(fillMissing), `class="missing"`,
				"tooltip="+quote("node "+n.ID+": no NODE_"+n.ID+" file"))
		case n.Unreachable:
			attrs = append(attrs, "label="+quote(n.ID+"\n(unreachable)"), "color="+quote(colorUnreachable),
				"fillcolor="+quote(fillUnreachable), `class="unreachable"`, "tooltip="+quote("node "+n.ID+": no edge leads here from the start"))
		case n.ID == g.Start:
			attrs = append(attrs, "label="+quote(n.ID), "color="+quote(colorStart), "fillcolor="+quote(fillStart), "penwidth=2.5",
				`class="start"`, "tooltip="+quote("node "+n.ID+" (start)"))
		default:
			attrs = append(attrs, "label="+quote(n.ID), "tooltip="+quote("node "+n.ID))
		}
		if n.AssetID != "" && links.Asset != nil {
			attrs = append(attrs, "URL="+quote(links.Asset(n.AssetID)))
		}
		fmt.Fprintf(&b, "  %s [%s];\n", name, strings.Join(attrs, ", "))
	}
	if start, ok := names[g.Start]; ok {
		// The story reads from its start: leftmost, even when a cycle
		// leads back to it.
		fmt.Fprintf(&b, "  { rank=source; %s; }\n", start)
	}
	for i, e := range g.Edges {
		attrs := []string{"id=" + quote(fmt.Sprintf("edge-%d", i)), "tooltip=" + quote("edge "+e.From+" → "+e.To)}
		if e.AssetID != "" && links.Asset != nil {
			attrs = append(attrs, "URL="+quote(links.Asset(e.AssetID)))
		}
		fmt.Fprintf(&b, "  %s -> %s [%s];\n", names[e.From], names[e.To], strings.Join(attrs, ", "))
	}
	// An end is a box of its own with a dashed arrow to where it hops: a
	// node of this story, or (a note) another story.
	outside := map[string]string{}
	for i, e := range g.Ends {
		name := fmt.Sprintf("e%d", i)
		attrs := []string{"label=" + quote("↪ "+e.Target), "id=" + quote(fmt.Sprintf("end-%d", i)),
			`style="rounded,filled,bold"`, "color=" + quote(colorEnd), "fillcolor=" + quote(fillEnd), "class=\"end\"",
			"tooltip=" + quote("end: hops to "+e.Target)}
		if e.AssetID != "" && links.Asset != nil {
			attrs = append(attrs, "URL="+quote(links.Asset(e.AssetID)))
		}
		fmt.Fprintf(&b, "  %s [%s];\n", name, strings.Join(attrs, ", "))
		target, inside := names[e.Target]
		if !inside {
			if target = outside[e.Target]; target == "" {
				target = fmt.Sprintf("s%d", len(outside))
				outside[e.Target] = target
				sattrs := []string{"label=" + quote("story "+e.Target), "id=" + quote("story-"+e.Target), "shape=note",
					`style="filled"`, "color=\"#777777\"", "fillcolor=\"#f7f7f7\"", "class=\"story\"", "tooltip=" + quote("another story: "+e.Target)}
				if e.Dangling {
					sattrs = append(sattrs, "label="+quote(e.Target+"\n(missing)"), `style="filled,dashed"`,
						"color="+quote(colorMissing), "fillcolor="+quote(fillMissing), `class="story missing"`,
						"tooltip="+quote(e.Target+": no node and no story of that name"))
				} else if links.Story != nil {
					sattrs = append(sattrs, "URL="+quote(links.Story(e.Target)))
				}
				fmt.Fprintf(&b, "  %s [%s];\n", target, strings.Join(sattrs, ", "))
			}
		}
		fmt.Fprintf(&b, "  %s -> %s [id=%s, style=dashed, color=%q, tooltip=%s];\n", name, target,
			quote(fmt.Sprintf("hop-%d", i)), colorEnd, quote("hops to "+e.Target))
	}
	b.WriteString("}\n")
	return b.String()
}

// quote makes a DOT double-quoted string: backslashes and quotes escaped
// (so Graphviz's own escapes such as \N or \l never apply to user text),
// line breaks as \n.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
