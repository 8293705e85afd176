package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/kube-gpu-exporter/kube-gpu-exporter/simulate"
)

// churner is a pod-resources Source whose pods come and go.
type churner struct {
	mu      sync.Mutex
	gpus    int
	next    int
	alive   map[string]pod // by name
	deleted map[string]time.Time
	created map[string]time.Time
	rng     *rand.Rand
}

type pod struct {
	name, container, resource, device string
}

func newChurner(gpus, pods int) *churner {
	c := &churner{gpus: gpus, alive: map[string]pod{}, deleted: map[string]time.Time{}, created: map[string]time.Time{}, rng: rand.New(rand.NewPCG(1, 2))}
	for i := 0; i < pods; i++ {
		c.create(time.Time{})
	}
	return c
}

// create adds a pod holding one GPU, whole or as a time-sliced replica.
func (c *churner) create(at time.Time) {
	n := c.next
	c.next++
	g := c.rng.IntN(c.gpus)
	p := pod{name: fmt.Sprintf("churn-%06d", n), container: "main", resource: "nvidia.com/gpu", device: simulate.UUID(g)}
	if n%3 == 0 {
		p.resource, p.device = "nvidia.com/gpu.shared", fmt.Sprintf("%s::%d", simulate.UUID(g), n%4)
	}
	c.alive[p.name] = p
	c.created[p.name] = at
}

// step deletes a few pods and creates as many.
func (c *churner) step(now time.Time) (created, deleted int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := slices.Sorted(maps.Keys(c.alive))
	k := 1 + c.rng.IntN(3)
	for i := 0; i < k && len(names) > 0; i++ {
		j := c.rng.IntN(len(names))
		delete(c.alive, names[j])
		delete(c.created, names[j])
		c.deleted[names[j]] = now
		names = append(names[:j], names[j+1:]...)
	}
	for i := 0; i < k; i++ {
		c.create(now)
	}
	return k, k
}

func (c *churner) List(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &podresourcesv1.ListPodResourcesResponse{}
	for _, p := range c.alive {
		out.PodResources = append(out.PodResources, &podresourcesv1.PodResources{
			Namespace: "soak", Name: p.name,
			Containers: []*podresourcesv1.ContainerResources{{
				Name:    p.container,
				Devices: []*podresourcesv1.ContainerDevices{{ResourceName: p.resource, DeviceIds: []string{p.device}}},
			}},
		})
	}
	return out, nil
}

func (c *churner) Allocatable(context.Context) (*podresourcesv1.AllocatableResourcesResponse, error) {
	ids := make([]string, c.gpus)
	for i := range ids {
		ids[i] = simulate.UUID(i)
	}
	return &podresourcesv1.AllocatableResourcesResponse{Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: ids}}}, nil
}

// expectation is what a scrape started at t must and must not show: pods
// deleted or created more than the cache TTL (plus a margin for the call)
// before the scrape started.
func (c *churner) expectation(t time.Time, settle time.Duration) (mustHave, mustLack map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mustHave, mustLack = map[string]bool{}, map[string]bool{}
	for n, at := range c.created {
		if t.Sub(at) > settle {
			mustHave[n] = true
		}
	}
	for n, at := range c.deleted {
		if t.Sub(at) > settle {
			mustLack[n] = true
		}
	}
	return mustHave, mustLack
}
