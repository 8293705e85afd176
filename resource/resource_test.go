package resource

import "testing"

func TestMatcher(t *testing.T) {
	m, err := NewMatcher(append(DefaultAll, "example.com/accel=acme"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		vendor string
		ok     bool
	}{
		{"nvidia.com/gpu", "nvidia", true},
		{"nvidia.com/gpu.shared", "nvidia", true},
		{"nvidia.com/mig-1g.10gb", "nvidia", true},
		{"nvidia.com/mig-", "", false},
		{"nvidia.com/gpus", "", false},
		{"amd.com/gpu", "amd", true},
		{"example.com/accel", "acme", true},
		{"cpu", "", false},
		{"hugepages-2Mi", "", false},
	}
	for _, tt := range tests {
		v, ok := m.Vendor(tt.name)
		if v != tt.vendor || ok != tt.ok {
			t.Errorf("Vendor(%q) = %q, %v; want %q, %v", tt.name, v, ok, tt.vendor, tt.ok)
		}
	}
}

func TestParseRuleErrors(t *testing.T) {
	for _, s := range []string{"", "gpu", "/gpu", "nvidia.com/", "nvidia.com/m*g", "nvidia.com/gpu="} {
		if _, err := ParseRule(s); err == nil {
			t.Errorf("ParseRule(%q): want error", s)
		}
	}
}
