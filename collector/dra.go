package collector

import (
	"github.com/kube-gpu-exporter/kube-gpu-exporter/kube"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/podresources"
)

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
			Resource: k.driver, Vendor: kube.DRAVendor(k.driver), Request: n, Limit: n,
		})
	}
	return out
}
