package collector

import (
	"strings"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/nvml"
)

// KubeletDeviceHealth is the kubelet's word on one device a container
// holds (KEP-4680): what its device plugin or DRA driver reported, as the
// pod's status carries it. Device is the NVML device the ID names, nil when
// none does (NVML down, another vendor's GPU).
type KubeletDeviceHealth struct {
	Namespace, Pod, Container string
	Device                    *nvml.Reading
	Vendor                    string
	// Resource is the extended resource, or the DRA driver for a device
	// allocated through a claim; DeviceID the plugin's device ID or the
	// claim's <driver>/<pool>/<device>.
	Resource, DeviceID string
	// Status is healthy, unhealthy or unknown.
	Status string
}

// kubeletHealthStatus maps the kubelet's Healthy, Unhealthy and Unknown to
// a bounded label value; anything else (a newer kubelet's state) is
// unknown.
func kubeletHealthStatus(h string) string {
	switch h {
	case "Healthy":
		return "healthy"
	case "Unhealthy":
		return "unhealthy"
	}
	return "unknown"
}

// kubeletHealth resolves the kubelet's device health entries to the NVML
// devices they name, in the specs' order (by container and device).
func kubeletHealth(in Inputs, ix *deviceIndex) []KubeletDeviceHealth {
	if in.Specs == nil || len(in.Specs.DeviceHealth) == 0 {
		return nil
	}
	out := make([]KubeletDeviceHealth, 0, len(in.Specs.DeviceHealth))
	for _, h := range in.Specs.DeviceHealth {
		row := KubeletDeviceHealth{
			Namespace: h.Namespace, Pod: h.Pod, Container: h.Container,
			Resource: h.Resource, DeviceID: h.ResourceID, Status: kubeletHealthStatus(h.Health),
		}
		if strings.HasPrefix(h.Resource, "claim:") {
			parts := strings.SplitN(h.ResourceID, "/", 3)
			if len(parts) != 3 {
				continue // not the <driver>/<pool>/<device> the API documents
			}
			row.Resource, row.Vendor = parts[0], kube.DRAVendor(parts[0])
			if in.Specs.DRA != nil {
				if uuid, ok := in.Specs.DRA.DRADeviceUUID(parts[0], parts[1], parts[2]); ok {
					row.Device = ix.byUUID[uuid]
				}
			}
		} else {
			row.Vendor, _ = in.Matcher.Vendor(h.Resource)
			if row.Vendor == vendor {
				row.Device = ix.resolve(h.ResourceID)
			}
		}
		out = append(out, row)
	}
	return out
}

func kubeletHealthValues(node string) func([]string, *KubeletDeviceHealth) []string {
	return func(b []string, h *KubeletDeviceHealth) []string {
		var uuid, model string
		if h.Device != nil {
			uuid, model = h.Device.UUID, h.Device.Name
		}
		return append(b, node, h.Namespace, h.Pod, h.Container, uuid, model, h.Vendor)
	}
}

// kubeletHealthFamilies serve the kubelet's view beside NVML's
// (kube_gpu_container_health_status), on the same shared labels.
var kubeletHealthFamilies = []Family[KubeletDeviceHealth]{{
	Name: Prefix + "_container_kubelet_health_status",
	Help: "1 for the health the kubelet reports in the pod's status (allocatedResourcesStatus) for a device the container holds, " +
		"as its device plugin or DRA driver said: status healthy, unhealthy or unknown. device_id is the plugin's device ID " +
		"or the DRA <driver>/<pool>/<device>; gpu_id the NVML device it names, empty when none does.",
	Labels: []string{"resource", "device_id", "status"},
	Each: func(h *KubeletDeviceHealth, emit func(float64, ...string)) {
		emit(1, h.Resource, h.DeviceID, h.Status)
	},
}}
