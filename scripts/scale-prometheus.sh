#!/usr/bin/env bash
# Measures what simulated GPU nodes cost a real Prometheus (docs/scale.md):
#
#   1. Prometheus (Debian's 2.42, as the tests run it) scrapes only itself
#      for SCALE_WARMUP seconds: its memory and series without GPU nodes;
#   2. SCALE_NODES copies of kube-gpu-exporter-sim, each with its own
#      --kube.node-name (the node label distinct per target), are added by a
#      configuration reload and scraped every SCALE_INTERVAL for
#      SCALE_SECONDS;
#   3. Prometheus's head series, samples appended per second, its own
#      process_resident_memory_bytes and go_memstats_heap_inuse_bytes and the
#      kernel's VmRSS are read at both ends, and the difference divided by the
#      series and nodes added.
#
# Prints one table of key=value lines (and keeps the raw answers in
# SCALE_OUT). Not part of `make test`: it takes minutes and its numbers
# depend on the machine. `make bench-scale` runs it.
#
# Environment:
#   SCALE_NODES     simulated nodes (default 40)
#   SCALE_SCENARIO  scenario file each serves (default: the built-in node)
#   SCALE_FLAGS     extra exporter flags, e.g. --metrics.exceptions-only
#   SCALE_INTERVAL  scrape interval (default 15s)
#   SCALE_WARMUP    seconds of Prometheus alone (default 60)
#   SCALE_SECONDS   seconds of scraping the nodes (default 180)
#   SCALE_PORT      first port tried (default 21000: below the kernel's
#                   ephemeral range, where the simulated nodes' own API
#                   servers take theirs)
#   SCALE_OUT       directory that keeps the raw outputs (default: temporary)
set -euo pipefail

cd "$(dirname "$0")/.."
CGO_CFLAGS=${CGO_CFLAGS:-$(scripts/build-flags.sh cgo-cflags)}
export CGO_CFLAGS CGO_ENABLED=1

nodes=${SCALE_NODES:-40}
scenario=${SCALE_SCENARIO:-}
flags=${SCALE_FLAGS:-}
interval=${SCALE_INTERVAL:-15s}
warmup=${SCALE_WARMUP:-60}
secs=${SCALE_SECONDS:-180}
port=${SCALE_PORT:-21000}
out=${SCALE_OUT:-$(mktemp -d -t kge-scale-XXXXXX)}
mkdir -p "$out/tsdb"

command -v prometheus >/dev/null || { echo "prometheus not found: make deps installs it" >&2; exit 1; }

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
log() { printf '%s\n' "$*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# next_port sets got to a free port from $port on (not in a subshell: the
# next call must go on from there).
next_port() {
	while ! port_free "$port"; do port=$((port + 1)); done
	got=$port
	port=$((port + 1))
}

go build -trimpath -ldflags "$(scripts/build-flags.sh ldflags)" -o "$out/kube-gpu-exporter-sim" ./cmd/kube-gpu-exporter-sim

next_port
prom_port=$got
prom=http://127.0.0.1:$prom_port
write_config() { # targets...
	{
		printf 'global:\n  scrape_interval: %s\n  scrape_timeout: 10s\nscrape_configs:\n' "$interval"
		printf '  - job_name: prometheus\n    static_configs: [{targets: ["127.0.0.1:%s"]}]\n' "$prom_port"
		if (($# > 0)); then
			printf '  - job_name: kube-gpu-exporter\n    static_configs:\n      - targets:\n'
			for t in "$@"; do printf '          - %s\n' "$t"; done
		fi
	} >"$out/prometheus.yml"
}
write_config
prometheus --config.file="$out/prometheus.yml" --storage.tsdb.path="$out/tsdb" \
	--web.listen-address="127.0.0.1:$prom_port" --web.enable-lifecycle --log.level=warn >"$out/prometheus.log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")

query() { # PromQL -> the first result's value
	curl -fsS --get "$prom/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // "NaN"'
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
snapshot() { # name: reads the numbers into $out/<name>.env
	{
		echo "head_series=$(query 'prometheus_tsdb_head_series')"
		echo "process_rss=$(query 'process_resident_memory_bytes{job="prometheus"}')"
		echo "heap_inuse=$(query 'go_memstats_heap_inuse_bytes{job="prometheus"}')"
		echo "vmrss=$(($(rss_kib "$prom_pid") * 1024))"
		echo "samples_per_s=$(query 'sum(rate(prometheus_tsdb_head_samples_appended_total[1m]))')"
		echo "cpu_cores=$(query 'rate(process_cpu_seconds_total{job="prometheus"}[1m])')"
	} >"$out/$1.env"
	cat "$out/$1.env" >&2
}

for _ in $(seq 100); do curl -fsS "$prom/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done
log "Prometheus alone for ${warmup}s"
sleep "$warmup"
snapshot before

log "starting $nodes simulated nodes"
targets=()
args=()
[[ -n $scenario ]] && args+=("--simulate.scenario=$scenario")
# shellcheck disable=SC2206 # SCALE_FLAGS is a list of flags
args+=($flags)
for i in $(seq -f %04g "$nodes"); do
	next_port
	p=$got
	"$out/kube-gpu-exporter-sim" "${args[@]}" --kube.node-name="gpu-node-$i" \
		--web.listen-address="127.0.0.1:$p" --log.level=warn >"$out/sim-$i.log" 2>&1 &
	pids+=("$!")
	targets+=("127.0.0.1:$p")
done
for t in "${targets[@]}"; do
	for _ in $(seq 100); do curl -fsS "http://$t/metrics" >/dev/null 2>&1 && break; sleep 0.2; done
done
one_node=$(curl -fsS "http://${targets[0]}/metrics" | grep -vc '^#')
write_config "${targets[@]}"
curl -fsS -X POST "$prom/-/reload"
log "scraping them every $interval for ${secs}s"
sleep "$secs"
up=$(query 'sum(up{job="kube-gpu-exporter"})')
snapshot after
if [[ $up != "$nodes" ]]; then
	log "only $up of $nodes nodes up: see $out/sim-*.log"
	exit 1
fi

# shellcheck disable=SC1091
{ source "$out/before.env"; b_series=$head_series b_vm=$vmrss b_rss=$process_rss b_heap=$heap_inuse b_rate=$samples_per_s; }
# shellcheck disable=SC1091
source "$out/after.env"
awk -v n="$nodes" -v up="$up" -v one="$one_node" -v i="$interval" \
	-v bs="$b_series" -v bv="$b_vm" -v br="$b_rss" -v bh="$b_heap" -v bsr="$b_rate" \
	-v as="$head_series" -v av="$vmrss" -v ar="$process_rss" -v ah="$heap_inuse" -v asr="$samples_per_s" -v cpu="$cpu_cores" '
BEGIN {
	ds = as - bs
	printf "date=%s\n", strftime("%Y-%m-%d %H:%M UTC", systime(), 1)
	printf "nodes=%d up=%d scrape_interval=%s series_per_scrape=%d\n", n, up, i, one
	printf "head_series before=%d after=%d added=%d per_node=%.0f (the scrape and up, scrape_* of each target)\n", bs, as, ds, ds / n
	printf "vmrss_mib before=%.1f after=%.1f bytes_per_series=%.0f per_node_mib=%.2f\n", bv/2^20, av/2^20, (av-bv)/ds, (av-bv)/n/2^20
	printf "process_rss_mib before=%.1f after=%.1f bytes_per_series=%.0f\n", br/2^20, ar/2^20, (ar-br)/ds
	printf "heap_inuse_mib before=%.1f after=%.1f bytes_per_series=%.0f\n", bh/2^20, ah/2^20, (ah-bh)/ds
	printf "samples_per_s before=%.1f after=%.1f per_node=%.2f\n", bsr, asr, (asr-bsr)/n
	printf "prometheus_cpu_cores=%.3f\n", cpu
}' | tee "$out/result.txt"
log "raw outputs in $out"
