package collector

import (
	"sort"
	"strings"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

// DRALookup resolves a device allocated through a DRA claim, as the kubelet
// names it (driver, pool, device), to its NVML UUID through the node's
// ResourceSlices. kube.Snapshot implements it.
type DRALookup interface {
	DRADeviceUUID(driver, pool, device string) (string, bool)
}

// draVendor is the gpu_vendor of a DRA driver: the organisation label of
// its domain name ("gpu.nvidia.com" -> "nvidia").
func draVendor(driver string) string {
	labels := strings.Split(driver, ".")
	if len(labels) >= 2 {
		return labels[len(labels)-2]
	}
	return driver
}

// claimID is how an unresolved claimed device is reported and logged.
func claimID(c podresources.ContainerClaim) string {
	return c.Driver + "/" + c.Pool + "/" + c.Device
}

// draRequests counts, per container and driver, the devices its claims were
// allocated: with DRA a claim's request is not in the pod spec's resources,
// and what was allocated is what the claim asked for.
func draRequests(claims []podresources.ContainerClaim) []ContainerResource {
	type key struct{ ns, pod, ctr, driver string }
	counts := map[key]float64{}
	var order []key
	for _, c := range claims {
		k := key{c.Namespace, c.Pod, c.Container, c.Driver}
		if _, ok := counts[k]; !ok {
			order = append(order, k)
		}
		counts[k]++ // podresources lists each device of a container once
	}
	out := make([]ContainerResource, 0, len(order))
	for _, k := range order {
		n := counts[k]
		out = append(out, ContainerResource{
			Namespace: k.ns, Pod: k.pod, Container: k.ctr,
			Resource: k.driver, Vendor: draVendor(k.driver), Request: n, Limit: n,
		})
	}
	return out
}

// sortRequests orders requests by container, then resource.
func sortRequests(out []ContainerResource) {
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Pod != b.Pod {
			return a.Pod < b.Pod
		}
		if a.Container != b.Container {
			return a.Container < b.Container
		}
		return a.Resource < b.Resource
	})
}
