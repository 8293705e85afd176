package exporter

import (
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
)

// kingpin's own duration, integer and size parsers report "time: invalid
// duration" without saying which flag was wrong. These values name it.

type durationValue struct {
	flag string
	d    *time.Duration
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("--%s: %q is not a duration such as 30s or 2m", v.flag, s)
	}
	*v.d = d
	return nil
}

func (v *durationValue) String() string { return v.d.String() }

func durationFlag(app *kingpin.Application, name, help, def string, d *time.Duration) {
	app.Flag(name, help).Default(def).SetValue(&durationValue{flag: name, d: d})
}

type intValue struct {
	flag string
	n    *int
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("--%s: %q is not an integer", v.flag, s)
	}
	*v.n = n
	return nil
}

func (v *intValue) String() string { return strconv.Itoa(*v.n) }

func intFlag(app *kingpin.Application, name, help, def string, n *int) {
	app.Flag(name, help).Default(def).SetValue(&intValue{flag: name, n: n})
}

type bytesValue struct {
	flag string
	n    *int64
}

func (v *bytesValue) Set(s string) error {
	b, err := units.ParseBase2Bytes(s)
	if err != nil {
		return fmt.Errorf("--%s: %q is not a size such as 64MiB", v.flag, s)
	}
	*v.n = int64(b)
	return nil
}

func (v *bytesValue) String() string { return units.Base2Bytes(*v.n).String() }

func bytesFlag(app *kingpin.Application, name, help, def string, n *int64) {
	app.Flag(name, help).Default(def).SetValue(&bytesValue{flag: name, n: n})
}
