package dashboards

import "strings"

// Thresholds shared by the panels and the alert rules in deploy/prometheus.
// The structural test reads alerts.rules.yaml and fails when they disagree.
const (
	// IdleDutyCycle: an allocated GPU below this duty cycle (percent) is
	// idle (alert GPUAllocatedIdle).
	IdleDutyCycle = 5.0
	// SaturatedDutyCycle: a GPU above this duty cycle (percent) is saturated
	// (alert GPUSaturated).
	SaturatedDutyCycle = 95.0
	// MemoryNearlyFull: a GPU with more of its memory in use (percent) is
	// nearly full (alert GPUMemoryNearlyFull).
	MemoryNearlyFull = 95.0
	// AllocationNearlyExhausted: requests above this share (percent) of the
	// allocatable GPUs exhaust the cluster (alert
	// GPUClusterAllocationNearlyExhausted).
	AllocationNearlyExhausted = 90.0
)

func f(v float64) *float64 { return &v }

func dutyThresholds() *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{
		{Color: "orange", Value: nil},
		{Color: "green", Value: f(IdleDutyCycle)},
		{Color: "red", Value: f(SaturatedDutyCycle)},
	}}
}

func memoryThresholds() *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{
		{Color: "green", Value: nil},
		{Color: "red", Value: f(MemoryNearlyFull)},
	}}
}

func allocationThresholds() *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{
		{Color: "green", Value: nil},
		{Color: "red", Value: f(AllocationNearlyExhausted)},
	}}
}

// countThresholds colours a count red from the first unit on: idle GPUs,
// unallocatable GPUs, unmatched devices, sources down.
func countThresholds(color string) *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{
		{Color: "green", Value: nil},
		{Color: color, Value: f(1)},
	}}
}

func neutralThresholds() *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{{Color: "blue", Value: nil}}}
}

// Units used by the panels (Grafana unit identifiers).
const (
	unitPercent = "percent"
	unitBytes   = "bytes"
	unitSeconds = "s"
	unitCount   = "none"
	unitRate    = "reqps"
)

// --- targets ---

// series is a range query drawn over time.
func series(expr, legend string) *Target {
	return &Target{Datasource: promDS, EditorMode: "code", Expr: expr, Format: "time_series", LegendFormat: legend, Range: true}
}

// instant is an instant query for stats, gauges and bar gauges.
func instant(expr, legend string) *Target {
	return &Target{Datasource: promDS, EditorMode: "code", Expr: expr, Format: "time_series", Instant: true, LegendFormat: legend}
}

// tabular is an instant query whose labels become table columns.
func tabular(expr string) *Target {
	return &Target{Datasource: promDS, EditorMode: "code", Expr: expr, Format: "table", Instant: true, LegendFormat: "__auto"}
}

func withRefIDs(ts []*Target) []*Target {
	for i, t := range ts {
		t.RefID = string(rune('A' + i))
	}
	return ts
}

// --- panels ---

func fieldConfig(unit string, th *Thresholds) *FieldConfig {
	return &FieldConfig{Defaults: FieldDefaults{
		Color:      map[string]any{"mode": "thresholds"},
		Mappings:   []any{},
		Thresholds: th,
		Unit:       unit,
	}, Overrides: []Override{}}
}

func percentRange(fc *FieldConfig) *FieldConfig {
	fc.Defaults.Min = f(0)
	fc.Defaults.Max = f(100)
	return fc
}

func timeseries(title, description, unit string, th *Thresholds, targets ...*Target) *Panel {
	fc := fieldConfig(unit, th)
	fc.Defaults.Color = map[string]any{"mode": "palette-classic"}
	thresholdStyle := "off"
	if len(th.Steps) > 1 {
		thresholdStyle = "dashed"
	}
	fc.Defaults.Custom = map[string]any{
		"drawStyle":         "line",
		"fillOpacity":       10,
		"lineWidth":         1,
		"showPoints":        "never",
		"spanNulls":         false,
		"axisSoftMin":       0,
		"thresholdsStyle":   map[string]any{"mode": thresholdStyle},
		"stacking":          map[string]any{"group": "A", "mode": "none"},
		"gradientMode":      "none",
		"lineInterpolation": "linear",
	}
	if unit == unitPercent {
		percentRange(fc)
	}
	return &Panel{
		Datasource:  promDS,
		Description: description,
		FieldConfig: fc,
		Options: map[string]any{
			"legend":  map[string]any{"calcs": []string{"lastNotNull", "mean", "max"}, "displayMode": "table", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		},
		Targets: withRefIDs(targets),
		Title:   title,
		Type:    "timeseries",
	}
}

func stat(title, description, unit string, th *Thresholds, targets ...*Target) *Panel {
	fc := fieldConfig(unit, th)
	if unit == unitPercent {
		percentRange(fc)
	}
	return &Panel{
		Datasource:  promDS,
		Description: description,
		FieldConfig: fc,
		Options: map[string]any{
			"colorMode":     "value",
			"graphMode":     "area",
			"justifyMode":   "auto",
			"orientation":   "auto",
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"textMode":      "auto",
		},
		Targets: withRefIDs(targets),
		Title:   title,
		Type:    "stat",
	}
}

func gauge(title, description string, th *Thresholds, targets ...*Target) *Panel {
	return &Panel{
		Datasource:  promDS,
		Description: description,
		FieldConfig: percentRange(fieldConfig(unitPercent, th)),
		Options: map[string]any{
			"orientation":          "auto",
			"reduceOptions":        map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"showThresholdLabels":  false,
			"showThresholdMarkers": true,
		},
		Targets: withRefIDs(targets),
		Title:   title,
		Type:    "gauge",
	}
}

func bargauge(title, description, unit string, th *Thresholds, targets ...*Target) *Panel {
	fc := fieldConfig(unit, th)
	if unit == unitPercent {
		percentRange(fc)
	} else {
		fc.Defaults.Min = f(0)
	}
	return &Panel{
		Datasource:  promDS,
		Description: description,
		FieldConfig: fc,
		Options: map[string]any{
			"displayMode":   "gradient",
			"orientation":   "horizontal",
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"showUnfilled":  true,
		},
		Targets: withRefIDs(targets),
		Title:   title,
		Type:    "bargauge",
	}
}

// column describes one value column of a table: the query's refId becomes
// "Value #<refId>" in Grafana's table format, renamed to Name.
type column struct {
	Name  string
	Unit  string
	Th    *Thresholds
	Color bool
}

// table merges instant queries that share label columns into one table.
// cols[i] names the value of targets[i]; hidden lists label columns to drop.
func table(title, description string, cols []column, hidden []string, sortBy string, targets ...*Target) *Panel {
	withRefIDs(targets)
	exclude := map[string]bool{"Time": true}
	for _, h := range hidden {
		exclude[h] = true
	}
	rename := map[string]string{}
	var overrides []Override
	for i, c := range cols {
		// Grafana names the value column "Value #<refId>", or just "Value"
		// when the panel has a single query.
		refs := []string{"Value #" + targets[i].RefID}
		if len(targets) == 1 {
			refs = append(refs, "Value")
		}
		for _, ref := range refs {
			if c.Name == "" {
				exclude[ref] = true
			} else {
				rename[ref] = c.Name
			}
		}
		if c.Name == "" {
			continue
		}
		props := []Property{{ID: "unit", Value: c.Unit}}
		if c.Unit == unitPercent {
			props = append(props, Property{ID: "min", Value: 0}, Property{ID: "max", Value: 100})
		}
		if c.Th != nil {
			props = append(props, Property{ID: "thresholds", Value: c.Th})
		}
		if c.Color {
			props = append(props, Property{ID: "custom.cellOptions", Value: map[string]any{"type": "color-background", "mode": "basic"}})
		}
		overrides = append(overrides, Override{Matcher: Matcher{ID: "byName", Options: c.Name}, Properties: props})
	}
	fc := fieldConfig("", neutralThresholds())
	fc.Defaults.Custom = map[string]any{"align": "auto", "cellOptions": map[string]any{"type": "auto"}, "filterable": true}
	fc.Defaults.Color = map[string]any{"mode": "thresholds"}
	fc.Overrides = overrides
	var sort []map[string]any
	if sortBy != "" {
		sort = []map[string]any{{"desc": true, "displayName": sortBy}}
	}
	return &Panel{
		Datasource:  promDS,
		Description: description,
		FieldConfig: fc,
		Options: map[string]any{
			"cellHeight": "sm",
			"footer":     map[string]any{"countRows": false, "fields": "", "reducer": []string{"sum"}, "show": false},
			"showHeader": true,
			"sortBy":     sort,
		},
		Targets: targets,
		Title:   title,
		Transformations: []Transformation{
			{ID: "merge", Options: map[string]any{}},
			{ID: "organize", Options: map[string]any{"excludeByName": exclude, "indexByName": map[string]any{}, "renameByName": rename}},
		},
		Type: "table",
	}
}

// sel joins label matchers into a selector body.
func sel(matchers ...string) string { return strings.Join(matchers, ", ") }

// m renders metric{matchers}.
func m(metric, selector string) string { return metric + "{" + selector + "}" }
