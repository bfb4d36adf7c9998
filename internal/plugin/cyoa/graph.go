package cyoa

import (
	"fmt"
	"html"
	"sort"
	"strings"
)

// Part is one asset of a story as the graph builder needs it.
type Part struct {
	AssetID string `json:"asset_id"`
	Key     string `json:"s3_key"`
	Name    string `json:"name"`
	Info    Info   `json:"-"`
}

// Graph is one story's graph with its problems.
type Graph struct {
	Story string      `json:"story"`
	Start string      `json:"start,omitempty"`
	Nodes []GraphNode `json:"nodes"`
	Edges []GraphEdge `json:"edges"`
	Ends  []GraphEnd  `json:"ends"`
	// Invalid lists the files whose names break the rules, with the reason.
	Invalid  []Problem `json:"invalid"`
	Problems []Problem `json:"problems"`
}

// GraphNode is a node; Missing nodes are named by edges but have no file.
type GraphNode struct {
	ID          string `json:"id"`
	AssetID     string `json:"asset_id,omitempty"`
	Missing     bool   `json:"missing,omitempty"`
	Unreachable bool   `json:"unreachable,omitempty"`
	Layer       int    `json:"layer"`
}

// GraphEdge is an edge between two node ids.
type GraphEdge struct {
	From    string `json:"from"`
	To      string `json:"to"`
	AssetID string `json:"asset_id"`
}

// GraphEnd is a HOPTO file: an end that hops to another story or node.
type GraphEnd struct {
	Target  string `json:"target"`
	AssetID string `json:"asset_id"`
}

// Problem is something wrong with a story, for a person to fix.
type Problem struct {
	Kind    string `json:"kind"` // missing_node, unreachable, invalid_name, no_start
	Subject string `json:"subject"`
	Message string `json:"message"`
}

// startNames are, in order, the node ids a story starts at; without any of
// them the story starts at its first node in name order.
var startNames = []string{"start", "intro"}

// BuildGraph assembles a story's graph from its parts: nodes, edges and ends
// from their names, with edges to missing nodes, nodes unreachable from the
// start node and invalid names reported as problems.
func BuildGraph(story string, parts []Part) Graph {
	g := Graph{Story: story, Nodes: []GraphNode{}, Edges: []GraphEdge{}, Ends: []GraphEnd{}, Invalid: []Problem{}, Problems: []Problem{}}
	nodes := map[string]*GraphNode{}
	var order []string
	for _, p := range parts {
		switch p.Info.Role {
		case RoleNode:
			if _, dup := nodes[p.Info.NodeID]; !dup {
				nodes[p.Info.NodeID] = &GraphNode{ID: p.Info.NodeID, AssetID: p.AssetID}
				order = append(order, p.Info.NodeID)
			}
		case RoleEdge:
			g.Edges = append(g.Edges, GraphEdge{From: p.Info.SrcNode, To: p.Info.DstNode, AssetID: p.AssetID})
		case RoleEnd:
			g.Ends = append(g.Ends, GraphEnd{Target: p.Info.HopTarget, AssetID: p.AssetID})
		case RoleInvalid:
			g.Invalid = append(g.Invalid, Problem{Kind: "invalid_name", Subject: p.Name, Message: p.Info.Reason})
		}
	}
	for _, e := range g.Edges {
		for _, id := range []string{e.From, e.To} {
			if _, ok := nodes[id]; !ok {
				nodes[id] = &GraphNode{ID: id, Missing: true}
				order = append(order, id)
				g.Problems = append(g.Problems, Problem{Kind: "missing_node", Subject: id,
					Message: fmt.Sprintf("an edge uses node %q but there is no NODE_%s file in this story", id, id)})
			}
		}
	}
	sort.Strings(order)
	for _, s := range startNames {
		if n, ok := nodes[s]; ok && !n.Missing {
			g.Start = s
			break
		}
	}
	if g.Start == "" {
		for _, id := range order {
			if !nodes[id].Missing {
				g.Start = id
				break
			}
		}
	}
	// Layers: breadth-first from the start; unreachable nodes after the rest.
	out := map[string][]string{}
	for _, e := range g.Edges {
		out[e.From] = append(out[e.From], e.To)
	}
	layer := map[string]int{}
	if g.Start != "" {
		layer[g.Start] = 0
		queue := []string{g.Start}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			next := out[cur]
			sort.Strings(next)
			for _, n := range next {
				if _, seen := layer[n]; !seen {
					layer[n] = layer[cur] + 1
					queue = append(queue, n)
				}
			}
		}
	} else if len(order) > 0 {
		g.Problems = append(g.Problems, Problem{Kind: "no_start", Subject: story, Message: "the story has no node files, so no start: add NODE_start.png (or NODE_intro.png)"})
	}
	deepest := 0
	for _, l := range layer {
		deepest = max(deepest, l)
	}
	for _, id := range order {
		n := nodes[id]
		if l, ok := layer[id]; ok {
			n.Layer = l
		} else {
			n.Layer, n.Unreachable = deepest+1, true
			if !n.Missing {
				g.Problems = append(g.Problems, Problem{Kind: "unreachable", Subject: id,
					Message: fmt.Sprintf("node %q cannot be reached from the start node %q: add an edge to it", id, g.Start)})
			}
		}
		g.Nodes = append(g.Nodes, *n)
	}
	return g
}

// SVG draws the graph: one column per layer, nodes as boxes, ends as
// rounded boxes hanging off the last column, problems in red. Every text is
// escaped: names are user input.
func (g Graph) SVG() string {
	const colW, rowH, boxW, boxH, pad = 190, 70, 150, 36, 30
	rows := map[int]int{}
	pos := map[string][2]int{}
	maxLayer := 0
	for _, n := range g.Nodes {
		pos[n.ID] = [2]int{pad + n.Layer*colW, pad + rows[n.Layer]*rowH}
		rows[n.Layer]++
		maxLayer = max(maxLayer, n.Layer)
	}
	maxRows := 0
	for _, r := range rows {
		maxRows = max(maxRows, r)
	}
	endX := pad + (maxLayer+1)*colW
	width := endX + boxW + pad
	height := pad*2 + max(maxRows, len(g.Ends), 1)*rowH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="story graph of %s" font-family="sans-serif" font-size="13">`,
		width, height, width, height, html.EscapeString(g.Story))
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>`)
	for _, e := range g.Edges {
		from, to := pos[e.From], pos[e.To]
		fmt.Fprintf(&b, `<line class="edge" data-from="%s" data-to="%s" x1="%d" y1="%d" x2="%d" y2="%d" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>`,
			html.EscapeString(e.From), html.EscapeString(e.To), from[0]+boxW, from[1]+boxH/2, to[0], to[1]+boxH/2)
	}
	for _, n := range g.Nodes {
		p := pos[n.ID]
		fill, stroke, dash, note := "#eef4ff", "#3366cc", "", ""
		switch {
		case n.Missing:
			fill, stroke, dash, note = "#fff0f0", "#cc0000", ` stroke-dasharray="5,4"`, " (missing)"
		case n.Unreachable:
			fill, stroke, note = "#fff7e6", "#cc6600", " (unreachable)"
		case n.ID == g.Start:
			stroke = "#117733"
		}
		fmt.Fprintf(&b, `<g class="node" data-id="%s"><title>%s%s</title><rect x="%d" y="%d" width="%d" height="%d" rx="4" fill="%s" stroke="%s" stroke-width="2"%s/><text x="%d" y="%d" text-anchor="middle">%s</text></g>`,
			html.EscapeString(n.ID), html.EscapeString(n.ID), note, p[0], p[1], boxW, boxH, fill, stroke, dash, p[0]+boxW/2, p[1]+boxH/2+5, html.EscapeString(clip(n.ID)))
	}
	for i, e := range g.Ends {
		y := pad + i*rowH
		fmt.Fprintf(&b, `<g class="end" data-target="%s"><title>HOPTO %s</title><rect x="%d" y="%d" width="%d" height="%d" rx="18" fill="#f0fff0" stroke="#117733" stroke-width="2"/><text x="%d" y="%d" text-anchor="middle">&#8618; %s</text></g>`,
			html.EscapeString(e.Target), html.EscapeString(e.Target), endX, y, boxW, boxH, endX+boxW/2, y+boxH/2+5, html.EscapeString(clip(e.Target)))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func clip(s string) string {
	if r := []rune(s); len(r) > 18 {
		return string(r[:17]) + "…"
	}
	return s
}
