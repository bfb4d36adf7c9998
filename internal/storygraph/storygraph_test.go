package storygraph

import (
	"context"
	"encoding/xml"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/plugin/cyoa"
)

// story builds a graph from file names, each file's asset ID "a-<name>".
func story(names ...string) cyoa.Graph {
	var parts []cyoa.Part
	for _, n := range names {
		parts = append(parts, cyoa.Part{AssetID: "a-" + n, Key: "cyoa/s/" + n, Name: n, Info: cyoa.Parse(n)})
	}
	return cyoa.BuildGraph("s", parts)
}

func chain(n int) []string {
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("NODE_n%d.png", i))
		if i > 0 {
			names = append(names, fmt.Sprintf("EDGE_n%d_to_n%d.png", (i-1)/2, i)) // a binary tree
		}
		if i > 2 && i%7 == 0 {
			names = append(names, fmt.Sprintf("EDGE_n%d_to_n%d.png", i, i/3)) // back edges
		}
	}
	return names
}

var links = Links{
	Asset: func(id string) string { return "/assets/" + id },
	Story: func(s string) string { return "/stories/" + s },
}

// svgElem is the part of Graphviz's SVG the checks read.
type svgElem struct {
	XMLName  xml.Name
	ID       string    `xml:"id,attr"`
	Class    string    `xml:"class,attr"`
	D        string    `xml:"d,attr"`
	Points   string    `xml:"points,attr"`
	Href     string    `xml:"http://www.w3.org/1999/xlink href,attr"`
	Title    string    `xml:"title"`
	Children []svgElem `xml:",any"`
}

type box struct{ x0, y0, x1, y1 float64 }

func (b box) contains(x, y, margin float64) bool {
	return x > b.x0+margin && x < b.x1-margin && y > b.y0+margin && y < b.y1-margin
}

var number = regexp.MustCompile(`-?[0-9]+(\.[0-9]+)?`)

func pairs(s string) [][2]float64 {
	nums := number.FindAllString(s, -1)
	var out [][2]float64
	for i := 0; i+1 < len(nums); i += 2 {
		x, _ := strconv.ParseFloat(nums[i], 64)
		y, _ := strconv.ParseFloat(nums[i+1], 64)
		out = append(out, [2]float64{x, y})
	}
	return out
}

func walk(e svgElem, fn func(svgElem)) {
	fn(e)
	for _, c := range e.Children {
		walk(c, fn)
	}
}

// drawn is what the checks learn from an SVG.
type drawn struct {
	boxes  map[string]box // by the DOT name in <title> (n0, e1, s0)
	edges  []svgElem      // <g class="edge">
	hrefs  []string
	svgIDs map[string]bool
}

func parse(t *testing.T, svg string) drawn {
	t.Helper()
	var root svgElem
	if err := xml.Unmarshal([]byte(svg), &root); err != nil {
		t.Fatalf("SVG does not parse: %v\n%s", err, svg)
	}
	d := drawn{boxes: map[string]box{}, svgIDs: map[string]bool{}}
	walk(root, func(e svgElem) {
		if e.ID != "" {
			d.svgIDs[e.ID] = true
		}
		if e.Href != "" {
			d.hrefs = append(d.hrefs, e.Href)
		}
		classes := strings.Fields(e.Class)
		if len(classes) == 0 || e.XMLName.Local != "g" {
			return
		}
		switch classes[0] {
		case "node":
			b := box{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)}
			walk(e, func(s svgElem) {
				for _, p := range append(pairs(s.D), pairs(s.Points)...) {
					b.x0, b.y0 = min(b.x0, p[0]), min(b.y0, p[1])
					b.x1, b.y1 = max(b.x1, p[0]), max(b.y1, p[1])
				}
			})
			d.boxes[e.Title] = b
		case "edge":
			d.edges = append(d.edges, e)
		}
	})
	return d
}

// crossings lists the edges whose drawn path passes through a box other
// than the two it joins.
func (d drawn) crossings() []string {
	var bad []string
	for _, e := range d.edges {
		from, to, _ := strings.Cut(e.Title, "->")
		var path string
		walk(e, func(s svgElem) {
			if s.XMLName.Local == "path" {
				path = s.D
			}
		})
		pts := pairs(path)
		for i := 0; i+3 < len(pts); i += 3 {
			for k := 0; k <= 20; k++ {
				t := float64(k) / 20
				u := 1 - t
				x := u*u*u*pts[i][0] + 3*u*u*t*pts[i+1][0] + 3*u*t*t*pts[i+2][0] + t*t*t*pts[i+3][0]
				y := u*u*u*pts[i][1] + 3*u*u*t*pts[i+1][1] + 3*u*t*t*pts[i+2][1] + t*t*t*pts[i+3][1]
				for name, b := range d.boxes {
					if name != from && name != to && b.contains(x, y, 1) {
						bad = append(bad, fmt.Sprintf("%s crosses %s at (%.0f,%.0f)", e.Title, name, x, y))
					}
				}
			}
		}
	}
	return bad
}

func TestStoryGraphs(t *testing.T) {
	t.Parallel()
	r := &Renderer{}
	t.Cleanup(func() { r.Close() })
	for _, tc := range []struct {
		name        string
		files       []string
		nodes, ends int // drawn boxes: nodes, ends and other stories
		edges       int // drawn edges, hops included
	}{
		{"cycle", []string{"NODE_start.png", "NODE_cave.png", "NODE_dungeon.png", "EDGE_start_to_cave.png", "EDGE_cave_to_dungeon.png", "EDGE_dungeon_to_start.png"}, 3, 0, 3},
		{"self loop", []string{"NODE_start.png", "NODE_well.png", "EDGE_start_to_well.png", "EDGE_well_to_well.png"}, 2, 0, 2},
		{"diamond and cross edge", []string{"NODE_intro.png", "NODE_cave.png", "NODE_lake.png", "NODE_end.png", "EDGE_intro_to_cave.png",
			"EDGE_intro_to_lake.png", "EDGE_cave_to_end.png", "EDGE_lake_to_end.png", "EDGE_lake_to_cave.png"}, 4, 0, 5},
		{"missing nodes and several ends", []string{"NODE_start.png", "EDGE_start_to_ghost.png", "EDGE_ghost_to_start.png",
			"HOPTO_start.png", "HOPTO_forest.png", "HOPTO_forest.jpg", "NODE_lonely.png"}, 3, 4, 5},
		{"200 nodes", chain(200), 200, 0, 199 + 28},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := story(tc.files...)
			svg, err := r.SVG(context.Background(), g, links)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(svg, "<svg") || strings.Contains(strings.ToLower(svg), "<script") {
				t.Fatalf("not a bare, script-free <svg>: %.200s", svg)
			}
			d := parse(t, svg)
			if len(d.boxes) != tc.nodes+tc.ends {
				t.Errorf("%d boxes, want %d nodes + %d ends/stories", len(d.boxes), tc.nodes, tc.ends)
			}
			if len(d.edges) != tc.edges {
				t.Errorf("%d edges drawn, want %d", len(d.edges), tc.edges)
			}
			for _, e := range d.edges {
				arrow := false
				walk(e, func(s svgElem) { arrow = arrow || s.XMLName.Local == "polygon" })
				if !arrow {
					t.Errorf("edge %s has no arrowhead", e.Title)
				}
			}
			if bad := d.crossings(); len(bad) > 0 {
				t.Errorf("edges under boxes:\n%s", strings.Join(bad, "\n"))
			}
			// Every node, edge and end with a file links to its asset.
			want := map[string]bool{}
			for _, f := range tc.files {
				switch cyoa.Parse(f).Role {
				case cyoa.RoleNode, cyoa.RoleEdge, cyoa.RoleEnd:
					want["/assets/a-"+f] = true
				}
			}
			for _, h := range d.hrefs {
				delete(want, h)
			}
			if len(want) > 0 {
				t.Errorf("no link to %v", want)
			}
			for _, n := range g.Nodes {
				if !d.svgIDs["node-"+n.ID] {
					t.Errorf("node %s has no element id node-%s", n.ID, n.ID)
				}
			}
		})
	}
}

// TestDOTEscapesNames: user text never leaves its quotes, and Graphviz's
// own escapes (\N, \l) do not apply to it.
func TestDOTEscapesNames(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`plain`:           `"plain"`,
		`a"b`:             `"a\"b"`,
		`back\N\l`:        `"back\\N\\l"`,
		"two\nlines\r":    `"two\nlines"`,
		`"]; x -> y; z [`: `"\"]; x -> y; z ["`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
	r := &Renderer{}
	t.Cleanup(func() { r.Close() })
	g := cyoa.Graph{Story: "s", Nodes: []cyoa.GraphNode{{ID: `x"];<script>`, AssetID: "1"}}, Ends: []cyoa.GraphEnd{{Target: `</svg>&`, AssetID: "2"}}}
	svg, err := r.SVG(context.Background(), g, links)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(svg, "<script>") || strings.Count(svg, "</svg>") != 1 {
		t.Fatalf("user text escaped its place:\n%s", svg)
	}
	parse(t, svg)
}
