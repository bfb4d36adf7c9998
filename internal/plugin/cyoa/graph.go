package cyoa

import (
	"fmt"
	"sort"
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
	Invalid []Problem `json:"invalid"`
	// Unknown lists the files whose names have no role in the graph.
	Unknown  []Problem `json:"unknown"`
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
	// Dangling: the target is no node of this story and no story
	// (CheckEnds sets it).
	Dangling bool `json:"dangling,omitempty"`
}

// CheckEnds marks the ends whose target is neither a node of this story
// nor a story that storyExists knows, and reports each as a problem.
func (g *Graph) CheckEnds(storyExists func(string) bool) {
	nodes := map[string]bool{}
	for _, n := range g.Nodes {
		if !n.Missing {
			nodes[n.ID] = true
		}
	}
	for i, e := range g.Ends {
		if nodes[e.Target] || storyExists(e.Target) {
			continue
		}
		g.Ends[i].Dangling = true
		g.Problems = append(g.Problems, Problem{Kind: "missing_hop_target", Subject: e.Target,
			Message: fmt.Sprintf("HOPTO_%s hops to %q, which is no node of this story (NODE_%s) and no story: add it, or rename the end", e.Target, e.Target, e.Target)})
	}
}

// Problem is something wrong with a story, for a person to fix.
type Problem struct {
	Kind    string `json:"kind"` // missing_node, unreachable, duplicate_node, invalid_name, unknown_role, no_start, missing_hop_target
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
	g := Graph{Story: story, Nodes: []GraphNode{}, Edges: []GraphEdge{}, Ends: []GraphEnd{}, Invalid: []Problem{}, Unknown: []Problem{}, Problems: []Problem{}}
	nodes := map[string]*GraphNode{}
	var order []string
	for _, p := range parts {
		switch p.Info.Role {
		case RoleNode:
			if first, dup := nodes[p.Info.NodeID]; dup {
				g.Problems = append(g.Problems, Problem{Kind: "duplicate_node", Subject: p.Name,
					Message: fmt.Sprintf("node %q has another file already (asset %s): the graph uses that one; remove or rename this one", p.Info.NodeID, first.AssetID)})
				continue
			}
			nodes[p.Info.NodeID] = &GraphNode{ID: p.Info.NodeID, AssetID: p.AssetID}
			order = append(order, p.Info.NodeID)
		case RoleEdge:
			g.Edges = append(g.Edges, GraphEdge{From: p.Info.SrcNode, To: p.Info.DstNode, AssetID: p.AssetID})
		case RoleEnd:
			g.Ends = append(g.Ends, GraphEnd{Target: p.Info.HopTarget, AssetID: p.AssetID})
		case RoleInvalid:
			g.Invalid = append(g.Invalid, Problem{Kind: "invalid_name", Subject: p.Name, Message: p.Info.Reason})
		default:
			g.Unknown = append(g.Unknown, Problem{Kind: "unknown_role", Subject: p.Name,
				Message: "the name does not start with NODE_, EDGE_ or HOPTO_: the file is banked, but has no place in the graph"})
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
