package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Reading the exporter's text exposition.

// series is one sample of the text exposition format.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition reads the samples of a Prometheus text exposition.
func parseExposition(text string) ([]series, error) {
	var out []series
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("exposition line %d %q: %w", n+1, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSample(line string) (series, error) {
	s := series{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, errors.New("no metric name")
	}
	s.name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " ,")
			if strings.HasPrefix(line, "}") {
				line = line[1:]
				break
			}
			eq := strings.Index(line, `="`)
			if eq <= 0 {
				return s, errors.New("malformed label")
			}
			key := line[:eq]
			line = line[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(line); j++ {
				c := line[j]
				if c == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(line[j])
					}
					continue
				}
				if c == '"' {
					line, closed = line[j+1:], true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return s, errors.New("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	f := strings.Fields(line)
	if len(f) < 1 || len(f) > 2 {
		return s, errors.New("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// find returns the value of the one series of name whose labels include want.
func find(ss []series, name string, want map[string]string) (float64, error) {
	var hits []series
	for _, s := range ss {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			hits = append(hits, s)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0].value, nil
	case 0:
		return 0, fmt.Errorf("no %s series with labels %v", name, want)
	default:
		return 0, fmt.Errorf("%d %s series with labels %v, want one", len(hits), name, want)
	}
}
