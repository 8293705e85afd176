#!/usr/bin/env bash
# Soak test (not part of CI): runs kube-gpu-exporter-sim for SOAK_DURATION
# (default 10m) on a simulated node whose GPU pods are created and deleted
# every few seconds, scraping it every second, and prints RSS, goroutines,
# heap and series over time. It fails when a scrape fails, a deleted pod's
# series outlive the kubelet cache, a live pod's series are missing, or
# goroutines, RSS or series grow from the start of the run to its end.
#
#   scripts/soak.sh                      # 10 minutes
#   SOAK_DURATION=1m scripts/soak.sh     # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1
CGO_CFLAGS=$(scripts/build-flags.sh cgo-cflags)
export CGO_CFLAGS
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/kube-gpu-exporter-sim" ./cmd/kube-gpu-exporter-sim
go build -o "$dir/soak" ./scripts/soak
duration=${SOAK_DURATION:-10m}
row=${SOAK_ROW:-1m}
exec_args=(-binary "$dir/kube-gpu-exporter-sim" -duration "$duration" -row "$row" -churn "${SOAK_CHURN:-3s}")
"$dir/soak" "${exec_args[@]}" "$@"
