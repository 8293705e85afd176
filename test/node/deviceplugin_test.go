package node

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// plugin is the test's device plugin: it advertises one extended resource
// with the simulated node's GPU UUIDs as device IDs, whole (GPU-<uuid>) or
// as time-slicing replicas (GPU-<uuid>::N), each on the NUMA nodes given,
// and registers with the kubelet as a real device plugin does.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	resource string
	socket   string // under the kubelet's device-plugins folder
	// numa lists the NUMA nodes of each device ID.
	numa map[string][]int64
	// replicas > 0 makes GetPreferredAllocation keep a container's
	// replicas on as few GPUs as it can, as the NVIDIA plugin does.
	replicas int

	mu        sync.Mutex
	unhealthy map[string]bool
	changed   chan struct{}
	srv       *grpc.Server
	quit      chan struct{}
}

func newPlugin(dir, resource string, numa map[string][]int64, replicas int) *plugin {
	name := filepath.Base(resource) // nvidia.com/gpu -> gpu.sock
	return &plugin{
		resource: resource, socket: filepath.Join(dir, "kge-"+name+".sock"), numa: numa, replicas: replicas,
		unhealthy: map[string]bool{}, changed: make(chan struct{}, 1),
	}
}

// start serves the plugin's socket and registers it with the kubelet.
func (p *plugin) start(kubeletSocket string) error {
	if err := os.Remove(p.socket); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale plugin socket: %w", err)
	}
	l, err := net.Listen("unix", p.socket)
	if err != nil {
		return fmt.Errorf("device plugin: %w", err)
	}
	p.mu.Lock()
	p.srv = grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(p.srv, p)
	srv := p.srv
	p.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	if err := p.register(kubeletSocket); err != nil {
		return err
	}
	quit := make(chan struct{})
	p.mu.Lock()
	p.quit = quit
	p.mu.Unlock()
	go p.reregister(kubeletSocket, quit)
	return nil
}

// reregister registers again whenever the kubelet's socket is made anew:
// a restarted kubelet forgets its plugins, which must come back by
// themselves, as the NVIDIA device plugin does.
func (p *plugin) reregister(kubeletSocket string, quit chan struct{}) {
	ino := func() uint64 {
		var st syscall.Stat_t
		if syscall.Stat(kubeletSocket, &st) != nil {
			return 0
		}
		return st.Ino
	}
	last := ino()
	for {
		select {
		case <-quit:
			return
		case <-time.After(100 * time.Millisecond):
		}
		if now := ino(); now != 0 && now != last && p.register(kubeletSocket) == nil {
			last = now
		}
	}
}

// register announces the plugin's resource to the kubelet.
func (p *plugin) register(kubeletSocket string) error {
	conn, err := grpc.NewClient("unix://"+kubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial kubelet: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: filepath.Base(p.socket), ResourceName: p.resource,
		Options: &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: p.replicas > 0},
	}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("register %s with the kubelet: %w", p.resource, err)
	}
	return nil
}

// stop ends the plugin as a crashed one ends: its socket goes away.
func (p *plugin) stop() {
	p.mu.Lock()
	srv, quit := p.srv, p.quit
	p.srv, p.quit = nil, nil
	p.mu.Unlock()
	if quit != nil {
		close(quit)
	}
	if srv != nil {
		srv.Stop()
	}
	os.Remove(p.socket)
}

// devices returns the plugin's devices with their health and topology.
func (p *plugin) devices() []*pluginapi.Device {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := slices.Sorted(maps.Keys(p.numa))
	out := make([]*pluginapi.Device, 0, len(ids))
	for _, id := range ids {
		d := &pluginapi.Device{ID: id, Health: pluginapi.Healthy, Topology: &pluginapi.TopologyInfo{}}
		if p.unhealthy[id] {
			d.Health = pluginapi.Unhealthy
		}
		for _, n := range p.numa[id] {
			d.Topology.Nodes = append(d.Topology.Nodes, &pluginapi.NUMANode{ID: n})
		}
		out = append(out, d)
	}
	return out
}

// GetDevicePluginOptions implements the device plugin API.
func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: p.replicas > 0}, nil
}

// ListAndWatch sends the devices, and again whenever their health changes.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices()}); err != nil {
			return fmt.Errorf("send devices: %w", err)
		}
		select {
		case <-p.changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// GetPreferredAllocation keeps a container's replicas together: the
// available IDs sorted, so that the replicas of one GPU come first.
func (p *plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		ids := slices.Clone(cr.MustIncludeDeviceIDs)
		avail := slices.Sorted(slices.Values(cr.AvailableDeviceIDs))
		for _, id := range avail {
			if len(ids) >= int(cr.AllocationSize) {
				break
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// Allocate hands the devices over as the NVIDIA plugin does, by
// environment: the containers here run no GPU code.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": fmt.Sprint(cr.DevicesIds)},
		})
	}
	return resp, nil
}

// PreStartContainer implements the device plugin API.
func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
