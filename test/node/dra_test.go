package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/internal/testkit"
	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// draDriverName is the driver the exporter counts as GPUs by default.
const draDriverName = "gpu.nvidia.com"

// draGPUs are the simulated GPUs the test's DRA driver publishes: the two
// after those the device plugins advertise.
var draGPUs = []int{10, 11}

// draPlugin is the test's DRA kubelet plugin: it publishes this node's
// ResourceSlice with a device per GPU, named gpu-N and carrying the GPU's
// NVML UUID as the uuid attribute (as NVIDIA's DRA driver does), and
// prepares claims without CDI devices: the containers run no GPU code.
type draPlugin struct {
	t      *testing.T
	helper *kubeletplugin.Helper
}

// PrepareResourceClaims implements kubeletplugin.DRAPlugin.
func (p *draPlugin) PrepareResourceClaims(_ context.Context, claims []*resourcev1.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := map[types.UID]kubeletplugin.PrepareResult{}
	for _, c := range claims {
		var res kubeletplugin.PrepareResult
		if c.Status.Allocation == nil {
			res.Err = fmt.Errorf("claim %s/%s is not allocated", c.Namespace, c.Name)
		} else {
			for _, r := range c.Status.Allocation.Devices.Results {
				if r.Driver == draDriverName {
					res.Devices = append(res.Devices, kubeletplugin.Device{Requests: []string{r.Request}, PoolName: r.Pool, DeviceName: r.Device})
				}
			}
		}
		out[c.UID] = res
	}
	return out, nil
}

// UnprepareResourceClaims implements kubeletplugin.DRAPlugin.
func (p *draPlugin) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := map[types.UID]error{}
	for _, c := range claims {
		out[c.UID] = nil
	}
	return out, nil
}

// HandleError implements kubeletplugin.DRAPlugin.
func (p *draPlugin) HandleError(_ context.Context, err error, msg string) {
	p.t.Logf("DRA plugin: %s: %v", msg, err)
}

// WatchHealthStatus implements kubeletplugin.DRAPlugin: device health is
// not this driver's concern.
func (p *draPlugin) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}

// startDRA registers the plugin with the kubelet, publishes its slice and
// makes the DeviceClass that claims ask for.
func (n *kubeNode) startDRA(t *testing.T) {
	registry, data := filepath.Join(n.rootDir, "plugins_registry"), filepath.Join(n.rootDir, "plugins", draDriverName)
	for _, d := range []string{registry, data} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &draPlugin{t: t}
	helper, err := kubeletplugin.Start(ctx, p,
		kubeletplugin.KubeClient(n.c.Client), kubeletplugin.NodeName(n.name), kubeletplugin.DriverName(draDriverName),
		kubeletplugin.RegistrarDirectoryPath(registry), kubeletplugin.PluginDataDirectoryPath(data))
	if err != nil {
		cancel()
		t.Fatalf("DRA plugin: %v", err)
	}
	p.helper = helper
	t.Cleanup(func() { helper.Stop(); cancel() })
	var devices []resourcev1.Device
	for _, g := range draGPUs {
		uuid := simulate.UUID(g)
		devices = append(devices, resourcev1.Device{
			Name:       fmt.Sprintf("gpu-%d", g),
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{"uuid": {StringValue: &uuid}},
		})
	}
	if err := helper.PublishResources(ctx, resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		n.name: {Slices: []resourceslice.Slice{{Devices: devices}}},
	}}); err != nil {
		t.Fatalf("publish ResourceSlice: %v", err)
	}
	class := &resourcev1.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: draDriverName},
		Spec: resourcev1.DeviceClassSpec{Selectors: []resourcev1.DeviceSelector{{
			CEL: &resourcev1.CELDeviceSelector{Expression: fmt.Sprintf("device.driver == %q", draDriverName)},
		}}},
	}
	if _, err := n.c.Client.ResourceV1().DeviceClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The kubelet lists a driver's claims only once the plugin has
	// registered.
	testkit.EventuallyNil(t, 30*time.Second, "DRA plugin registered", func() error {
		if st := helper.RegistrationStatus(); st == nil || !st.PluginRegistered {
			return fmt.Errorf("registration status %v", st)
		}
		return nil
	})
}

// A container whose GPU comes from a ResourceClaim, allocated by the real
// scheduler from the driver's ResourceSlice and prepared by the kubelet
// through the test's DRA plugin, is served with that GPU: the exporter
// reads the claim from the pod-resources DynamicResources fields and the
// GPU's UUID from the slice.
func testDRA(t *testing.T, n *kubeNode, addr string) {
	ctx := context.Background()
	claim := &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "one-gpu", Namespace: testNamespace},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: draDriverName},
		}}}},
	}
	if _, err := n.c.Client.ResourceV1().ResourceClaims(testNamespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	main := ctr("main", "", 0)
	main.Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
	n.createPodWith(t, "dra", func(spec *corev1.PodSpec) {
		spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: &claim.Name}}
	}, nil, main)
	c, err := n.c.Client.ResourceV1().ResourceClaims(testNamespace).Get(ctx, claim.Name, metav1.GetOptions{})
	if err != nil || c.Status.Allocation == nil || len(c.Status.Allocation.Devices.Results) != 1 {
		t.Fatalf("claim not allocated: %v %+v", err, c.Status)
	}
	dev := c.Status.Allocation.Devices.Results[0].Device
	var gpu int
	if _, err := fmt.Sscanf(dev, "gpu-%d", &gpu); err != nil {
		t.Fatalf("allocated device %q: %v", dev, err)
	}
	claimed := 0
	for _, p := range n.kubeletList(t).GetPodResources() {
		for _, ctr := range p.GetContainers() {
			for _, dr := range ctr.GetDynamicResources() {
				claimed += len(dr.GetClaimResources())
			}
		}
	}
	if claimed != 1 {
		t.Fatalf("the kubelet lists %d claimed devices, want 1", claimed)
	}
	n.waitAgree(t, addr, append(runningHolders(), holder("dra", "main", gpu)...), 30*time.Second)
	n.deletePod(t, "dra")
	n.waitAgree(t, addr, runningHolders(), 30*time.Second)
}
