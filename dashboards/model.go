package dashboards

// The types below are the subset of Grafana's dashboard JSON model (schema
// version 39, read by Grafana 10 to 12) that the three dashboards use. Field
// names and nesting follow Grafana's export format so that the generated
// files import unchanged through the UI, the HTTP API or a provisioning
// sidecar.

// SchemaVersion is the dashboard schema the files are written in.
const SchemaVersion = 39

// DatasourceVar is the name of the template variable that every panel and
// every target reads its data source from.
const DatasourceVar = "datasource"

// DatasourceRef points at a data source. The dashboards only ever use the
// variable reference, never a concrete data source UID.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// promDS is the reference every panel and target carries.
var promDS = &DatasourceRef{Type: "prometheus", UID: "${" + DatasourceVar + "}"}

// Dashboard is the top-level object of a dashboard file.
type Dashboard struct {
	Annotations          Annotations `json:"annotations"`
	Description          string      `json:"description"`
	Editable             bool        `json:"editable"`
	FiscalYearStartMonth int         `json:"fiscalYearStartMonth"`
	GraphTooltip         int         `json:"graphTooltip"`
	ID                   *int        `json:"id"`
	Links                []Link      `json:"links"`
	Panels               []*Panel    `json:"panels"`
	Refresh              string      `json:"refresh"`
	SchemaVersion        int         `json:"schemaVersion"`
	Tags                 []string    `json:"tags"`
	Templating           Templating  `json:"templating"`
	Time                 TimeRange   `json:"time"`
	Timepicker           struct{}    `json:"timepicker"`
	Timezone             string      `json:"timezone"`
	Title                string      `json:"title"`
	UID                  string      `json:"uid"`
	Version              int         `json:"version"`
}

// Annotations holds the dashboard's annotation queries.
type Annotations struct {
	List []Annotation `json:"list"`
}

// Annotation is Grafana's built-in "Annotations & Alerts" entry.
type Annotation struct {
	BuiltIn    int            `json:"builtIn"`
	Datasource map[string]any `json:"datasource"`
	Enable     bool           `json:"enable"`
	Hide       bool           `json:"hide"`
	IconColor  string         `json:"iconColor"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
}

// Link is a link shown in the dashboard header.
type Link struct {
	AsDropdown  bool     `json:"asDropdown"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
	Tags        []string `json:"tags"`
	TargetBlank bool     `json:"targetBlank"`
	Title       string   `json:"title"`
	Type        string   `json:"type"`
}

// TimeRange is the default time range of the dashboard.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Templating holds the template variables.
type Templating struct {
	List []*Variable `json:"list"`
}

// Variable is a template variable: the data source picker or a Prometheus
// label_values query.
type Variable struct {
	AllValue    string         `json:"allValue,omitempty"`
	Current     map[string]any `json:"current"`
	Datasource  *DatasourceRef `json:"datasource,omitempty"`
	Definition  string         `json:"definition,omitempty"`
	Description string         `json:"description,omitempty"`
	Hide        int            `json:"hide"`
	IncludeAll  bool           `json:"includeAll"`
	Label       string         `json:"label"`
	Multi       bool           `json:"multi"`
	Name        string         `json:"name"`
	Options     []any          `json:"options"`
	Query       any            `json:"query"`
	Refresh     int            `json:"refresh"`
	Regex       string         `json:"regex"`
	SkipURLSync bool           `json:"skipUrlSync"`
	Sort        int            `json:"sort"`
	Type        string         `json:"type"`
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Panel is a visualisation or a row.
type Panel struct {
	Collapsed   *bool          `json:"collapsed,omitempty"`
	Datasource  *DatasourceRef `json:"datasource,omitempty"`
	Description string         `json:"description,omitempty"`
	FieldConfig *FieldConfig   `json:"fieldConfig,omitempty"`
	GridPos     GridPos        `json:"gridPos"`
	ID          int            `json:"id"`
	Options     map[string]any `json:"options,omitempty"`
	Panels      []*Panel       `json:"panels,omitempty"`
	// Interval is the panel's minimum query step, TimeFrom a time range of
	// its own (e.g. a 30-day trend on a dashboard showing 6 hours).
	Interval        string           `json:"interval,omitempty"`
	TimeFrom        string           `json:"timeFrom,omitempty"`
	Targets         []*Target        `json:"targets,omitempty"`
	Title           string           `json:"title"`
	Transformations []Transformation `json:"transformations,omitempty"`
	Type            string           `json:"type"`
}

// FieldConfig sets units, thresholds and per-field overrides.
type FieldConfig struct {
	Defaults  FieldDefaults `json:"defaults"`
	Overrides []Override    `json:"overrides"`
}

// FieldDefaults apply to every field of a panel unless overridden.
type FieldDefaults struct {
	Color      map[string]any `json:"color,omitempty"`
	Custom     map[string]any `json:"custom,omitempty"`
	Decimals   *int           `json:"decimals,omitempty"`
	Mappings   []any          `json:"mappings"`
	Max        *float64       `json:"max,omitempty"`
	Min        *float64       `json:"min,omitempty"`
	NoValue    string         `json:"noValue,omitempty"`
	Thresholds *Thresholds    `json:"thresholds,omitempty"`
	Unit       string         `json:"unit,omitempty"`
}

// Thresholds colour values by absolute steps.
type Thresholds struct {
	Mode  string `json:"mode"`
	Steps []Step `json:"steps"`
}

// Step starts a colour at Value; the first step has a nil Value (the base).
type Step struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"`
}

// Override changes properties of the fields a matcher selects.
type Override struct {
	Matcher    Matcher    `json:"matcher"`
	Properties []Property `json:"properties"`
}

// Matcher selects fields, here by display name.
type Matcher struct {
	ID      string `json:"id"`
	Options string `json:"options"`
}

// Property is one overridden field property.
type Property struct {
	ID    string `json:"id"`
	Value any    `json:"value"`
}

// Transformation is a data-frame transformation of a panel.
type Transformation struct {
	ID      string         `json:"id"`
	Options map[string]any `json:"options"`
}

// Target is one Prometheus query of a panel.
type Target struct {
	Datasource   *DatasourceRef `json:"datasource"`
	EditorMode   string         `json:"editorMode"`
	Exemplar     bool           `json:"exemplar"`
	Expr         string         `json:"expr"`
	Format       string         `json:"format"`
	Instant      bool           `json:"instant"`
	Interval     string         `json:"interval,omitempty"`
	LegendFormat string         `json:"legendFormat"`
	Range        bool           `json:"range"`
	RefID        string         `json:"refId"`
}
