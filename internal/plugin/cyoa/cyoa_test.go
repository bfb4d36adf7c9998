package cyoa

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/dab-assets/dab/internal/plugin"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		want       Info
		wantReason string
	}{
		{"NODE_intro.png", Info{Role: RoleNode, NodeID: "intro"}, ""},
		{"NODE_intro", Info{Role: RoleNode, NodeID: "intro"}, ""},
		{"NODE_big_cave-2.tar.gz", Info{Role: RoleNode, NodeID: "big_cave-2.tar"}, "character"},
		{"NODE_big_cave-2.png", Info{Role: RoleNode, NodeID: "big_cave-2"}, ""},
		{"EDGE_intro_to_cave.png", Info{Role: RoleEdge, SrcNode: "intro", DstNode: "cave"}, ""},
		{"EDGE_a_b_to_c-d.jpg", Info{Role: RoleEdge, SrcNode: "a_b", DstNode: "c-d"}, ""},
		{"HOPTO_end.png", Info{Role: RoleEnd, HopTarget: "end"}, ""},
		{"cover.png", Info{Role: RoleUnknown}, ""},
		{"node_lower.png", Info{Role: RoleUnknown}, ""},
		// The seed crashed or mis-parsed all of these.
		{"NODE.png", Info{Role: RoleInvalid}, "underscore"},
		{"NODE_.png", Info{Role: RoleInvalid}, "empty"},
		{"NODEintro.png", Info{Role: RoleInvalid}, "underscore"},
		{"EDGE_intro.png", Info{Role: RoleInvalid}, "exactly once"},
		{"EDGE_a_to_b_to_c.png", Info{Role: RoleInvalid}, "2 times"},
		{"EDGE_a_to_to_b.png", Info{Role: RoleInvalid}, "2 times"},
		{"EDGE__to_b.png", Info{Role: RoleInvalid}, "source"},
		{"EDGE_a_to_.png", Info{Role: RoleInvalid}, "destination"},
		{"EDGE_a b_to_c.png", Info{Role: RoleInvalid}, "character"},
		{"HOPTO_.png", Info{Role: RoleInvalid}, "empty"},
		{"HOPTO_x_to_y.png", Info{Role: RoleInvalid}, "_to_"},
		{"NODE_a_to_b.png", Info{Role: RoleInvalid}, "_to_"},
		{"NODE_ü.png", Info{Role: RoleInvalid}, "character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Parse(tt.name)
			if tt.wantReason != "" {
				if got.Role != RoleInvalid || !strings.Contains(got.Reason, tt.wantReason) {
					t.Fatalf("Parse(%q) = %+v, want invalid with reason containing %q", tt.name, got, tt.wantReason)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.name, got, tt.want)
			}
		})
	}
}

func TestDeriveStory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want map[string]string
	}{
		{"NODE_a.png", map[string]string{"graph_role": "node", "node_id": "a", "story": "default"}},
		{"forest/EDGE_a_to_b.png", map[string]string{"graph_role": "edge", "src_node": "a", "dst_node": "b", "story": "forest"}},
		{"forest/deep/HOPTO_end.png", map[string]string{"graph_role": "end", "hop_target": "end", "story": "forest/deep"}},
	}
	for _, tt := range tests {
		name := tt.path[strings.LastIndexByte(tt.path, '/')+1:]
		got, err := Plugin{}.Derive(context.Background(), plugin.Asset{Type: "cyoa", Path: tt.path, Name: name})
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Derive(%q) = %v, %v; want %v", tt.path, got, err, tt.want)
		}
	}
}

// FuzzParse: Parse never panics, always gives a known role, and a valid
// role's ids follow the rules.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"NODE_a.png", "EDGE_a_to_b.png", "HOPTO_x", "EDGE_", "NODE", ".png", "EDGE_a_to_to_b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		i := Parse(name)
		switch i.Role {
		case RoleNode:
			mustID(t, i.NodeID)
		case RoleEdge:
			mustID(t, i.SrcNode)
			mustID(t, i.DstNode)
		case RoleEnd:
			mustID(t, i.HopTarget)
		case RoleInvalid:
			if i.Reason == "" {
				t.Fatalf("invalid %q without reason", name)
			}
		case RoleUnknown:
		default:
			t.Fatalf("role %q", i.Role)
		}
	})
}

func mustID(t *testing.T, id string) {
	t.Helper()
	if msg := checkID(id); msg != "" {
		t.Fatalf("accepted id %q: %s", id, msg)
	}
}
