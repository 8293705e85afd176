package dashboards

import "fmt"

// board lays panels out left to right, top to bottom on the 24-column grid
// and numbers them.
type board struct {
	d      *Dashboard
	nextID int
	x, y   int
	rowH   int
}

func newBoard(uid, title, description string, tags []string, vars ...*Variable) *board {
	d := &Dashboard{
		Annotations: Annotations{List: []Annotation{{
			BuiltIn:    1,
			Datasource: map[string]any{"type": "grafana", "uid": "-- Grafana --"},
			Enable:     true,
			Hide:       true,
			IconColor:  "rgba(0, 211, 255, 1)",
			Name:       "Annotations & Alerts",
			Type:       "dashboard",
		}}},
		Description:   description,
		Editable:      true,
		GraphTooltip:  1,
		Links:         []Link{{AsDropdown: true, IncludeVars: true, KeepTime: true, Tags: []string{"kube-gpu-exporter"}, Title: "GPU dashboards", Type: "dashboards"}},
		Panels:        []*Panel{},
		Refresh:       "30s",
		SchemaVersion: SchemaVersion,
		Tags:          tags,
		Templating:    Templating{List: append([]*Variable{datasourceVariable()}, vars...)},
		Time:          TimeRange{From: "now-6h", To: "now"},
		Timezone:      "browser",
		Title:         title,
		UID:           uid,
		Version:       1,
	}
	return &board{d: d, nextID: 1}
}

// row starts a new row below everything placed so far.
func (b *board) row(title string) {
	b.newline()
	collapsed := false
	b.d.Panels = append(b.d.Panels, &Panel{
		Collapsed: &collapsed,
		GridPos:   GridPos{H: 1, W: 24, X: 0, Y: b.y},
		ID:        b.id(),
		Panels:    []*Panel{},
		Title:     title,
		Type:      "row",
	})
	b.y++
}

func (b *board) newline() {
	if b.x > 0 {
		b.y += b.rowH
		b.x, b.rowH = 0, 0
	}
}

func (b *board) id() int {
	id := b.nextID
	b.nextID++
	return id
}

// add places p with width w and height h, wrapping to a new line when the
// current one is full.
func (b *board) add(w, h int, p *Panel) {
	if b.x+w > 24 {
		b.newline()
	}
	p.GridPos = GridPos{H: h, W: w, X: b.x, Y: b.y}
	p.ID = b.id()
	b.x += w
	if h > b.rowH {
		b.rowH = h
	}
	b.d.Panels = append(b.d.Panels, p)
}

// --- template variables ---

func datasourceVariable() *Variable {
	return &Variable{
		Current: map[string]any{},
		Hide:    0,
		Label:   "Data source",
		Name:    DatasourceVar,
		Options: []any{},
		Query:   "prometheus",
		Refresh: 1,
		Type:    "datasource",
	}
}

// queryVariable is a label_values variable. With all set it offers "All",
// which sends the regex .* so that matchers written as label=~"$var" also
// match series without the label (cluster_name is optional).
func queryVariable(name, label, description, selector, labelName string, multi, all bool) *Variable {
	def := fmt.Sprintf("label_values(%s, %s)", selector, labelName)
	v := &Variable{
		Current:     map[string]any{},
		Datasource:  promDS,
		Definition:  def,
		Description: description,
		IncludeAll:  all,
		Label:       label,
		Multi:       multi,
		Name:        name,
		Options:     []any{},
		// The classic string form: every Grafana from 9 to 12 reads it,
		// whatever selector the label_values query uses.
		Query:   def,
		Refresh: 2,
		Sort:    1,
		Type:    "query",
	}
	if all {
		v.AllValue = ".*"
		v.Current = map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}}
	}
	return v
}

func clusterVariable() *Variable {
	return queryVariable("cluster", "Cluster",
		"Value of the exporter's --cluster.name. All (the default) also matches series without the label.",
		"kube_gpu_exporter_build_info", "cluster_name", true, true)
}
