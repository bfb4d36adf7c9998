// The console's CYOA stories and their graphs.

package web

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/dab-assets/dab/internal/api"
	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/plugin/cyoa"
	"github.com/dab-assets/dab/internal/storygraph"
)

// stories groups the cyoa records by story.
func (c *Console) stories(ctx context.Context) (map[string][]cyoa.Part, error) {
	out := map[string][]cyoa.Part{}
	cursor := ""
	for range 500 { // up to 500,000 records
		page, err := c.d.Assets.List(ctx, asset.ListOptions{Type: "cyoa", Cursor: cursor, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, rec := range page.Records {
			story := rec.Metadata["story"]
			if story == "" {
				story = cyoa.Story(rec.Path)
			}
			out[story] = append(out[story], cyoa.Part{AssetID: rec.ID, Key: rec.S3Key, Name: rec.Name, Info: cyoa.Parse(rec.Name)})
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	return out, nil
}

func (c *Console) storiesPage(w http.ResponseWriter, r *http.Request) {
	all, err := c.stories(r.Context())
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	type row struct {
		Name            string
		Files, Problems int
	}
	var rows []row
	for name, parts := range all {
		g := cyoa.BuildGraph(name, parts)
		g.CheckEnds(func(story string) bool { _, ok := all[story]; return ok })
		rows = append(rows, row{Name: name, Files: len(parts), Problems: len(g.Problems) + len(g.Invalid) + len(g.Unknown)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	c.render(w, r, http.StatusOK, "stories", "Stories", rows, "")
}

func (c *Console) graph(r *http.Request) (cyoa.Graph, bool, error) {
	all, err := c.stories(r.Context())
	if err != nil {
		return cyoa.Graph{}, false, err
	}
	parts, ok := all[r.PathValue("story")]
	g := cyoa.BuildGraph(r.PathValue("story"), parts)
	g.CheckEnds(func(story string) bool { _, ok := all[story]; return ok })
	return g, ok, nil
}

func (c *Console) storyPage(w http.ResponseWriter, r *http.Request) {
	g, ok, err := c.graph(r)
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "message", "Unavailable", nil, err.Error())
		return
	}
	if !ok {
		c.render(w, r, http.StatusNotFound, "message", "Not found", nil, "no story "+r.PathValue("story"))
		return
	}
	svg, err := c.graphs.SVG(r.Context(), g, storygraph.Links{
		Asset: func(id string) string { return "/assets/" + url.PathEscape(id) },
		Story: func(s string) string { return "/stories/" + url.PathEscape(s) },
	})
	if err != nil {
		c.render(w, r, http.StatusInternalServerError, "message", "Cannot draw the story", nil, err.Error()+": the story's JSON is at /v1/cyoa/stories/"+url.PathEscape(g.Story)+"/graph")
		return
	}
	c.render(w, r, http.StatusOK, "story", "Story "+g.Story, map[string]any{"Graph": g, "SVG": svg}, "")
}

func (c *Console) storyJSON(w http.ResponseWriter, r *http.Request) {
	g, ok, err := c.graph(r)
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	if !ok {
		api.WriteError(w, http.StatusNotFound, "story_not_found", "no cyoa assets in story "+strconv.Quote(r.PathValue("story")))
		return
	}
	api.WriteJSON(w, http.StatusOK, g)
}
