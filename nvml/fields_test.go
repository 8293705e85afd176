package nvml

import (
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/nvmltest"
)

// Fields newer than the driver answer as an older NVML answers a field ID
// it does not know: their families are absent and off, nothing is
// counted, and the fields the driver has still serve.
func TestFieldsNewerThanTheDriver(t *testing.T) {
	for _, tc := range []struct {
		driver             int
		recovery, clockTme bool
	}{
		{535, false, false},
		{550, false, false},
		{570, true, false},
		{580, true, true},
		{0, true, true}, // newest
	} {
		m := newMockNode(t, 1)
		var energy nvmltest.EnergyCounter
		p := h100Profile(&energy)
		p.Driver = tc.driver
		nvmltest.Apply(&m.dev(0).Device, p)
		nvmltest.NoEvents(&m.srv.Interface)
		s := telemetrySampler(m)
		for range 3 {
			s.Poll()
			m.clock.Advance(5 * time.Second)
		}
		r := s.Snapshot().Devices[0]
		if got := r.Health.RecoveryAction.OK; got != tc.recovery || (r.Supported&FamilyRecoveryAction != 0) != tc.recovery {
			t.Errorf("R%d: recovery action read %v, supported %v; want %v", tc.driver, got, r.Supported&FamilyRecoveryAction != 0, tc.recovery)
		}
		if got := r.Telemetry.ClockEventSeconds != nil; got != tc.clockTme || (r.Supported&FamilyClockEventTime != 0) != tc.clockTme {
			t.Errorf("R%d: clock event times read %v, supported %v; want %v", tc.driver, got, r.Supported&FamilyClockEventTime != 0, tc.clockTme)
		}
		if !r.Telemetry.TempMemory.OK {
			t.Errorf("R%d: memory temperature lost", tc.driver)
		}
		if errs := s.Errors(); len(errs) > 1 || (len(errs) == 1 && errs["event_set"] == 0) {
			t.Errorf("R%d: errors counted %v; an unknown field is not an error", tc.driver, errs)
		}
	}
}

// Once a field has answered, its errors are counted like any call's and
// its family stays on.
func TestFieldErrorAfterAnswerIsCounted(t *testing.T) {
	m := newMockNode(t, 1)
	var energy nvmltest.EnergyCounter
	nvmltest.Apply(&m.dev(0).Device, h100Profile(&energy))
	nvmltest.NoEvents(&m.srv.Interface)
	healthy := m.dev(0).GetFieldValuesFunc
	s := telemetrySampler(m)
	s.Poll()
	m.dev(0).GetFieldValuesFunc = func(v []gonvml.FieldValue) gonvml.Return {
		ret := healthy(v)
		for i := range v {
			if v[i].FieldId == gonvml.FI_DEV_GET_GPU_RECOVERY_ACTION {
				v[i].NvmlReturn = uint32(gonvml.ERROR_UNKNOWN)
			}
		}
		return ret
	}
	m.clock.Advance(5 * time.Second)
	s.Poll()
	r := s.Snapshot().Devices[0]
	if r.Health.RecoveryAction.OK || r.Supported&FamilyRecoveryAction == 0 || s.Errors()["unknown"] != 1 {
		t.Fatalf("recovery action %v, supported %v, errors %v; want it dropped this poll, still on, counted once", r.Health.RecoveryAction, r.Supported&FamilyRecoveryAction != 0, s.Errors())
	}
}
