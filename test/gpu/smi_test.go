package gpu

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Reading nvidia-smi: its CSV queries and the periodic samples.

// runSMI runs an nvidia-smi command and returns its standard output.
func runSMI(cmd *exec.Cmd) (string, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s%s", strings.Join(cmd.Args, " "), err, out, stderr.Bytes())
	}
	return string(out), nil
}

// runCSV runs an nvidia-smi query printed as CSV and returns its rows and
// the text they were read from.
func runCSV(cmd *exec.Cmd) (recs [][]string, out string, err error) {
	if out, err = runSMI(cmd); err != nil {
		return nil, "", err
	}
	r := csv.NewReader(strings.NewReader(out))
	r.TrimLeadingSpace = true
	if recs, err = r.ReadAll(); err != nil {
		return nil, out, fmt.Errorf("nvidia-smi output %q: %w", out, err)
	}
	return recs, out, nil
}

// queryCSV runs an nvidia-smi query with --format=csv,noheader,nounits for
// GPU 0 and returns its one row.
func queryCSV(smi func(...string) *exec.Cmd, fields ...string) ([]string, error) {
	recs, out, err := runCSV(smi("--query-gpu="+strings.Join(fields, ","), "--format=csv,noheader,nounits", "-i", "0"))
	if err != nil {
		return nil, err
	}
	if len(recs) != 1 || len(recs[0]) != len(fields) {
		return nil, fmt.Errorf("nvidia-smi output %q: want one row of %d fields", out, len(fields))
	}
	return recs[0], nil
}

// number parses one nvidia-smi value; "[N/A]" and "[Not Supported]" are errors.
func number(field, s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("nvidia-smi %s is %q, not a number", field, s)
	}
	return v, nil
}

func queryGPU(smi func(...string) *exec.Cmd) (gpuInfo, error) {
	rec, err := queryCSV(smi, "uuid", "name", "memory.total", "driver_version")
	if err != nil {
		return gpuInfo{}, err
	}
	total, err := number("memory.total", rec[2])
	if err != nil {
		return gpuInfo{}, err
	}
	if !strings.HasPrefix(rec[0], "GPU-") {
		return gpuInfo{}, fmt.Errorf("nvidia-smi uuid %q is not a GPU UUID", rec[0])
	}
	return gpuInfo{UUID: rec[0], Name: rec[1], TotalMiB: total, Driver: rec[3]}, nil
}

// queryMemory returns GPU 0's used and total memory in MiB.
func queryMemory(smi func(...string) *exec.Cmd) (used, total float64, err error) {
	rec, err := queryCSV(smi, "memory.used", "memory.total")
	if err != nil {
		return 0, 0, err
	}
	if used, err = number("memory.used", rec[0]); err != nil {
		return 0, 0, err
	}
	total, err = number("memory.total", rec[1])
	return used, total, err
}

// smiSample is one utilization reading, stamped at the middle of the call.
type smiSample struct {
	at    time.Time
	value float64
	err   error
}

// sampleField reads one numeric --query-gpu field of GPU 0 every interval
// until ctx ends, then sends everything it read.
func sampleField(ctx context.Context, smi func(...string) *exec.Cmd, field string, every time.Duration) <-chan []smiSample {
	out := make(chan []smiSample, 1)
	go func() {
		var got []smiSample
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			start := time.Now()
			rec, err := queryCSV(smi, field)
			s := smiSample{at: start.Add(time.Since(start) / 2), err: err}
			if err == nil {
				s.value, s.err = number(field, rec[0])
			}
			got = append(got, s)
			select {
			case <-ctx.Done():
				out <- got
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// meanWithin averages the good samples taken within [from, to], the window
// the exporter's value covers.
func meanWithin(samples []smiSample, from, to time.Time) (float64, int) {
	var sum float64
	var n int
	for _, s := range samples {
		if s.err == nil && !s.at.Before(from) && !s.at.After(to) {
			sum += s.value
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

func samplesErrors(samples []smiSample) []error {
	var errs []error
	for _, s := range samples {
		if s.err != nil {
			errs = append(errs, s.err)
		}
	}
	return errs
}
