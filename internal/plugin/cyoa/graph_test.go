package cyoa

import (
	"strings"
	"testing"
)

func parts(names ...string) []Part {
	var out []Part
	for i, n := range names {
		out = append(out, Part{AssetID: string(rune('a' + i)), Name: n, Info: Parse(n)})
	}
	return out
}

func kinds(g Graph) map[string][]string {
	m := map[string][]string{}
	for _, p := range g.Problems {
		m[p.Kind] = append(m[p.Kind], p.Subject)
	}
	return m
}

func TestBuildGraph(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		files     []string
		start     string
		problems  map[string]string // kind -> comma-joined subjects
		layers    map[string]int
		invalid   int
		nodeCount int
	}{
		{"chain with cycle", []string{"NODE_intro.png", "NODE_cave.png", "NODE_lake.png", "EDGE_intro_to_cave.png", "EDGE_cave_to_lake.png", "EDGE_lake_to_intro.png", "HOPTO_end.png"},
			"intro", map[string]string{}, map[string]int{"intro": 0, "cave": 1, "lake": 2}, 0, 3},
		{"missing node", []string{"NODE_start.png", "EDGE_start_to_ghost.png"},
			"start", map[string]string{"missing_node": "ghost"}, map[string]int{"start": 0, "ghost": 1}, 0, 2},
		{"unreachable", []string{"NODE_start.png", "NODE_a.png", "NODE_island.png", "EDGE_start_to_a.png"},
			"start", map[string]string{"unreachable": "island"}, map[string]int{"start": 0, "a": 1, "island": 2}, 0, 3},
		{"no start name: first node", []string{"NODE_b.png", "NODE_a.png", "EDGE_a_to_b.png"},
			"a", map[string]string{}, map[string]int{"a": 0, "b": 1}, 0, 2},
		{"invalid names", []string{"NODE_x.png", "EDGE_a_to_b_to_c.png", "NODE_.png", "cover.png"},
			"x", map[string]string{}, map[string]int{"x": 0}, 2, 1},
		{"only edges", []string{"EDGE_a_to_b.png"},
			"", map[string]string{"missing_node": "a,b", "no_start": "s"}, nil, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := BuildGraph("s", parts(tt.files...))
			if g.Start != tt.start || len(g.Nodes) != tt.nodeCount || len(g.Invalid) != tt.invalid {
				t.Fatalf("start %q nodes %d invalid %d: %+v", g.Start, len(g.Nodes), len(g.Invalid), g)
			}
			got := kinds(g)
			for k, want := range tt.problems {
				if strings.Join(got[k], ",") != want {
					t.Errorf("%s: %v, want %s", k, got[k], want)
				}
			}
			if len(got) != len(tt.problems) {
				t.Errorf("problems %v, want %v", got, tt.problems)
			}
			for _, n := range g.Nodes {
				if want, ok := tt.layers[n.ID]; ok && n.Layer != want {
					t.Errorf("node %s layer %d, want %d", n.ID, n.Layer, want)
				}
			}
		})
	}
}

// TestUnknownAndInvalidFilesListed: files without a role and files with
// broken names are listed with their reasons, not dropped.
func TestUnknownAndInvalidFilesListed(t *testing.T) {
	t.Parallel()
	g := BuildGraph("s", parts("NODE_start.png", "cover.jpg", "EDGE_a_to_b_to_c.png"))
	if len(g.Unknown) != 1 || g.Unknown[0].Subject != "cover.jpg" || !strings.Contains(g.Unknown[0].Message, "NODE_") {
		t.Errorf("unknown: %+v", g.Unknown)
	}
	if len(g.Invalid) != 1 || g.Invalid[0].Subject != "EDGE_a_to_b_to_c.png" || g.Invalid[0].Message == "" {
		t.Errorf("invalid: %+v", g.Invalid)
	}
}

func FuzzBuildGraph(f *testing.F) {
	f.Add("NODE_a.png EDGE_a_to_b.png HOPTO_x.png")
	f.Fuzz(func(t *testing.T, names string) {
		g := BuildGraph("s", parts(strings.Fields(names)...))
		if len(g.Nodes)+len(g.Edges)+len(g.Ends)+len(g.Invalid)+len(g.Unknown)+len(g.Problems) < len(strings.Fields(names)) {
			t.Fatalf("files lost from the graph: %+v", g)
		}
		for _, n := range g.Nodes {
			if n.Layer < 0 {
				t.Fatal("negative layer")
			}
		}
	})
}

// TestCheckEnds: an end that hops to a node of the story or to a known
// story is fine; one that hops nowhere is marked and reported.
func TestCheckEnds(t *testing.T) {
	t.Parallel()
	g := BuildGraph("s", parts("NODE_start.png", "HOPTO_start.png", "HOPTO_forest.png", "HOPTO_end.png"))
	g.CheckEnds(func(story string) bool { return story == "forest" })
	var dangling []string
	for _, e := range g.Ends {
		if e.Dangling {
			dangling = append(dangling, e.Target)
		}
	}
	if len(dangling) != 1 || dangling[0] != "end" {
		t.Fatalf("dangling ends %v, want [end]", dangling)
	}
	found := false
	for _, p := range g.Problems {
		found = found || p.Kind == "missing_hop_target" && p.Subject == "end" && strings.Contains(p.Message, "NODE_end")
	}
	if !found {
		t.Fatalf("problems %+v lack the dangling end", g.Problems)
	}
}
