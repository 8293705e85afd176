package gputop

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is the API server as the user's kubeconfig reaches it.
type Cluster struct {
	// Base is the API server's URL, without a trailing slash.
	Base   string
	Client *http.Client
	// Namespace is the kubeconfig context's namespace ("default" if none).
	Namespace string
}

// LoadCluster reads the kubeconfig as kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config; context "" is the current one.
func LoadCluster(kubeconfig, context string) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	rc, err := cfg.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cfg.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig namespace: %w", err)
	}
	client, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	base, _, err := rest.DefaultServerUrlFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig server: %w", err)
	}
	return &Cluster{Base: strings.TrimRight(base.String(), "/"), Client: client, Namespace: ns}, nil
}

func (c *Cluster) list(ctx context.Context, resource, namespace, selector string, into any) error {
	path := "/api/v1/" + resource
	if namespace != "" {
		path = "/api/v1/namespaces/" + url.PathEscape(namespace) + "/" + resource
	}
	body, err := get(ctx, c.Client, c.Base+path+"?"+url.Values{"labelSelector": {selector}}.Encode())
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("list %s: %w", resource, err)
	}
	return nil
}

// listAnywhere lists in every namespace, or, where RBAC allows only the
// context's namespace, there.
func (c *Cluster) listAnywhere(ctx context.Context, resource, selector string, into any) error {
	err := c.list(ctx, resource, "", selector, into)
	if err == nil {
		return nil
	}
	if err2 := c.list(ctx, resource, c.Namespace, selector, into); err2 == nil {
		return nil
	}
	return err
}

// PrometheusServices finds the services labelled selector and returns each
// as a Prometheus reached through the API server's service proxy, on its
// port named web or http (or its only, or first, port).
func (c *Cluster) PrometheusServices(ctx context.Context, selector string) ([]*Prometheus, error) {
	var list corev1.ServiceList
	if err := c.listAnywhere(ctx, "services", selector, &list); err != nil {
		return nil, fmt.Errorf("list services labelled %s: %w", selector, err)
	}
	slices.SortFunc(list.Items, func(a, b corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var out []*Prometheus
	for _, s := range list.Items {
		if len(s.Spec.Ports) == 0 {
			continue
		}
		port := s.Spec.Ports[0]
		for _, p := range s.Spec.Ports {
			if p.Name == "web" || p.Name == "http" || p.Name == "http-web" {
				port = p
				break
			}
		}
		ref := s.Name + ":" + strconv.Itoa(int(port.Port))
		if port.Name != "" {
			ref = s.Name + ":" + port.Name
		}
		out = append(out, &Prometheus{
			URL:    c.Base + "/api/v1/namespaces/" + url.PathEscape(s.Namespace) + "/services/" + url.PathEscape(ref) + "/proxy",
			Client: c.Client,
			Name:   fmt.Sprintf("Prometheus service %s/%s (through the API server's service proxy)", s.Namespace, s.Name),
		})
	}
	return out, nil
}

// Exporters finds the running exporter pods labelled selector and returns
// a source scraping each through the API server's pod proxy, on its
// container port named metrics (9871 where none is named).
func (c *Cluster) Exporters(ctx context.Context, selector string) (*Scrapes, error) {
	var list corev1.PodList
	if err := c.listAnywhere(ctx, "pods", selector, &list); err != nil {
		return nil, fmt.Errorf("list pods labelled %s: %w", selector, err)
	}
	s := &Scrapes{Client: c.Client, Parallel: 8,
		Name: fmt.Sprintf("exporter pods labelled %s (through the API server's pod proxy)", selector)}
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		port := int32(9871)
		for _, ctr := range p.Spec.Containers {
			for _, cp := range ctr.Ports {
				if cp.Name == "metrics" {
					port = cp.ContainerPort
				}
			}
		}
		ref := fmt.Sprintf("%s:%d", p.Name, port)
		s.URLs = append(s.URLs, c.Base+"/api/v1/namespaces/"+url.PathEscape(p.Namespace)+"/pods/"+url.PathEscape(ref)+"/proxy/metrics")
	}
	slices.Sort(s.URLs)
	if len(s.URLs) == 0 {
		return nil, fmt.Errorf("no running pod labelled %s", selector)
	}
	return s, nil
}
