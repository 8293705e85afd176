package podresources

import (
	"errors"
	"strings"
	"testing"
)

const (
	gpuUUID = "GPU-5151b5ae-7e33-b4f6-f5c3-6a5fb0b98f87"
	migUUID = "MIG-0cae1c2b-b5a0-5b39-9a1a-e4c1d2f3a4b5"
)

func TestParseDeviceID(t *testing.T) {
	tests := []struct {
		id   string
		want DeviceRef
	}{
		{gpuUUID, DeviceRef{UUID: gpuUUID, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: -1}},
		{gpuUUID + "::0", DeviceRef{UUID: gpuUUID, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: 0}},
		{gpuUUID + "::47", DeviceRef{UUID: gpuUUID, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: 47}},
		{migUUID, DeviceRef{UUID: migUUID, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: -1}},
		{migUUID + "::3", DeviceRef{UUID: migUUID, Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: 3}},
		{"MIG-" + gpuUUID + "/7/0", DeviceRef{ParentUUID: gpuUUID, Minor: -1, GPUInstance: 7, ComputeInstance: 0, Replica: -1}},
		{"nvidia0", DeviceRef{Minor: 0, GPUInstance: -1, ComputeInstance: -1, Replica: -1}},
		{"nvidia15", DeviceRef{Minor: 15, GPUInstance: -1, ComputeInstance: -1, Replica: -1}},
		{"nvidia0/vgpu1", DeviceRef{Minor: 0, GPUInstance: -1, ComputeInstance: -1, Replica: 1}},
		{"nvidia2/gi0", DeviceRef{Minor: 2, GPUInstance: 0, ComputeInstance: -1, Replica: -1}},
		{strings.ToUpper(gpuUUID[:4]) + strings.ToUpper(gpuUUID[4:]), DeviceRef{UUID: "GPU-5151B5AE-7E33-B4F6-F5C3-6A5FB0B98F87", Minor: -1, GPUInstance: -1, ComputeInstance: -1, Replica: -1}},
	}
	for _, tt := range tests {
		got, err := ParseDeviceID(tt.id)
		if err != nil {
			t.Errorf("ParseDeviceID(%q): %v", tt.id, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDeviceID(%q) = %+v, want %+v", tt.id, got, tt.want)
		}
	}
}

func TestParseDeviceIDErrors(t *testing.T) {
	for _, id := range []string{
		"", "GPU-", "GPU-1234", gpuUUID + "::", gpuUUID + "::x", gpuUUID + "::-1", gpuUUID + ":1",
		"GPU-5151b5ae-7e33-b4f6-f5c3-6a5fb0b98f8z", "MIG-" + gpuUUID, "MIG-" + gpuUUID + "/1",
		"MIG-" + gpuUUID + "/a/0", "MIG-GPU-1234/1/0", "nvidia", "nvidia-1", "nvidia0/", "nvidia0/vgpu",
		"nvidia0/gix", "nvidia0/mig1", "nvidia99999999", "amd0", " GPU-" + gpuUUID[4:],
	} {
		_, err := ParseDeviceID(id)
		if err == nil {
			t.Errorf("ParseDeviceID(%q): want error", id)
			continue
		}
		if !errors.Is(err, ErrDeviceID) {
			t.Errorf("ParseDeviceID(%q): error %v does not wrap ErrDeviceID", id, err)
		}
	}
}

// FuzzParseDeviceID checks that no input panics and that every accepted ID
// names exactly one kind of device with sane numbers.
func FuzzParseDeviceID(f *testing.F) {
	for _, s := range []string{gpuUUID, gpuUUID + "::3", migUUID, "MIG-" + gpuUUID + "/1/0", "nvidia0", "nvidia0/vgpu1", "nvidia1/gi2", "junk"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		ref, err := ParseDeviceID(id)
		if err != nil {
			return
		}
		ways := 0
		if ref.UUID != "" {
			ways++
		}
		if ref.ParentUUID != "" {
			ways++
		}
		if ref.Minor >= 0 {
			ways++
		}
		if ways != 1 {
			t.Fatalf("ParseDeviceID(%q) = %+v names the device %d ways", id, ref, ways)
		}
		if ref.Replica < -1 || ref.GPUInstance < -1 || ref.ComputeInstance < -1 {
			t.Fatalf("ParseDeviceID(%q) = %+v has negative numbers", id, ref)
		}
	})
}
