module github.com/kube-gpu-exporter/kube-gpu-exporter

go 1.26.8
