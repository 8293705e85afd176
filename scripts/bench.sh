#!/usr/bin/env bash
# Measures the exporter against its targets and prints one table:
#
#   1. go benchmarks: a full scrape (collect + text encoding) per simulated
#      node against client_golang's floor for the same series, the /metrics
#      handler with gzip, and one uncached kubelet round trip;
#   2. the built binary on a simulated node with 8 GPUs and 110 pods (8 of
#      them holding a GPU): time from launch to the first complete scrape,
#      memory after BENCH_SOAK_SECONDS of one scrape a second, and CPU at one
#      scrape every 15 seconds over BENCH_CPU_SECONDS;
#   3. node_exporter (Debian's prometheus-node-exporter, installed when
#      missing) run beside it and scraped at the same moments, for the
#      exporter's memory target: an RSS no larger than node_exporter's on the
#      same machine.
#
# Environment:
#   BENCH_SOAK_SECONDS  duration of the 1 s scrape soak (default 300)
#   BENCH_CPU_SECONDS   duration of the 15 s interval CPU measurement (default 120)
#   BENCH_TIME          -benchtime of each benchmark (default 1s)
#   BENCH_COUNT         runs of the benchmarks; medians are shown (default 3)
#   BENCH_PORT          first port tried for the binary (default 19871)
#   BENCH_NE_PORT       first port tried for node_exporter (default 19100)
#   BENCH_SIZE_PKG      package whose stripped build is the binary size shown
#                       (default ./cmd/exporter, the production binary)
#   BENCH_OUT           directory that keeps raw outputs (default: a temporary one)
set -euo pipefail

cd "$(dirname "$0")/.."
CGO_CFLAGS=${CGO_CFLAGS:-$(scripts/build-flags.sh cgo-cflags)}
export CGO_CFLAGS
export CGO_ENABLED=1

soak=${BENCH_SOAK_SECONDS:-300}
cpu_secs=${BENCH_CPU_SECONDS:-120}
benchtime=${BENCH_TIME:-1s}
count=${BENCH_COUNT:-3}
port=${BENCH_PORT:-19871}
ne_port=${BENCH_NE_PORT:-19100}
size_pkg=${BENCH_SIZE_PKG:-./cmd/exporter}
ne_bin=/usr/bin/prometheus-node-exporter
out=${BENCH_OUT:-$(mktemp -d -t kge-bench-XXXXXX)}
mkdir -p "$out"

pid= ne_pid=
stop() {
	if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
		kill "$1"
		wait "$1" 2>/dev/null || true
	fi
}
cleanup() { stop "$pid"; stop "$ne_pid"; }
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

# --- 1. benchmarks ---------------------------------------------------------

# The runs are spread over time rather than made back to back (-count), so
# that a burst of load from elsewhere on the machine spoils one run of a case,
# not all of them; the median then leaves it out.
log "benchmarks (-benchtime=$benchtime, $count runs): $out/bench.txt"
: >"$out/bench.txt"
for ((r = 1; r <= count; r++)); do
	go test -run '^$' -bench . -benchmem -benchtime="$benchtime" ./collector/... >>"$out/bench.txt"
	go test -run '^$' -bench 'Handler/.*/gzip|StatusPage' -benchmem -benchtime="$benchtime" ./internal/exporter/ >>"$out/bench.txt"
done

# --- 2. the binary on a simulated node -------------------------------------

log "building the binary"
go build -o "$out/kube-gpu-exporter-sim" ./cmd/kube-gpu-exporter-sim

# The size shown is that of the binary deployed, built as `make build` does
# (stripped), which need not be the one run here on a simulated node.
log "building $size_pkg as released, for its size"
go build -trimpath -ldflags '-s -w' -o "$out/size/kube-gpu-exporter" "$size_pkg"
size_bin=$out/size/kube-gpu-exporter

# node_exporter from Debian, the reference for memory. Installing it starts
# a service; only the instance run below, on loopback, is measured, so any
# the package started is stopped (there may be no service manager).
if [[ ! -x $ne_bin ]]; then
	log "installing prometheus-node-exporter (Debian package)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null
	systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true
	# The binary was missing before, so every instance of it now running was
	# started by the package.
	for p in /proc/[0-9]*; do
		if [[ $(readlink "$p/exe" 2>/dev/null) == "$ne_bin" ]]; then kill "${p#/proc/}" 2>/dev/null || true; fi
	done
fi

# The simulated node: 8 whole GPUs held by 8 single-container pods, and 102
# pods without GPUs (one or two containers), 110 in all: the kubelet's
# default pod limit.
scenario=$out/node-110-pods.yaml
{
	echo "node: bench-node"
	echo "model: A100-SXM4-40GB"
	echo "gpus: 8"
	echo "pods:"
	for g in 0 1 2 3 4 5 6 7; do
		echo "  - namespace: team-$((g % 3))"
		echo "    name: trainer-$g"
		echo "    containers:"
		echo "      - name: main"
		echo "        resource: nvidia.com/gpu"
		echo "        devices: [\"$g\"]"
		echo "        utilization: {mean: $((20 + 9 * g)), swing: 5, period: 2m}"
		echo "        memoryGiB: $((2 + 4 * g))"
	done
	for ((p = 8; p < 110; p++)); do
		echo "  - namespace: apps-$((p % 20))"
		echo "    name: web-$p"
		if ((p % 2)); then
			echo "    containers: [{name: app}, {name: sidecar}]"
		else
			echo "    containers: [{name: app}]"
		fi
	done
} >"$scenario"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
while ! port_free "$port"; do port=$((port + 1)); done
url=http://127.0.0.1:$port/metrics
while [[ $ne_port == "$port" ]] || ! port_free "$ne_port"; do ne_port=$((ne_port + 1)); done
ne_url=http://127.0.0.1:$ne_port/metrics

now_ns() { date +%s%N; }
sleep_until() { # ns since the epoch
	local left=$(($1 - $(now_ns)))
	if ((left > 0)); then sleep "$(printf '%d.%09d' $((left / 1000000000)) $((left % 1000000000)))"; fi
}
# scrape fetches /metrics (of $2, default the exporter) as Prometheus does
# (gzip) and prints the status.
scrape() { curl -s --compressed -o "$1" -w '%{http_code}' "${2:-$url}" || true; }
# scrape_both scrapes the exporter, then node_exporter: the same cadence for
# both, failures counted for each.
failed=0 ne_failed=0
scrape_both() {
	[[ $(scrape /dev/null) == 200 ]] || failed=$((failed + 1))
	[[ $(scrape /dev/null "$ne_url") == 200 ]] || ne_failed=$((ne_failed + 1))
}
cpu_ticks() { # utime + stime of process $1 (default $pid), in clock ticks
	local stat
	stat=$(<"/proc/${1:-$pid}/stat")
	stat=${stat##*) } # the fields after the command name
	read -r -a f <<<"$stat"
	echo $((f[11] + f[12])) # fields 14 and 15 of proc(5)
}
status_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/${2:-$pid}/status"; }
# cpu_pct TICKS NS DECIMALS: CPU time as a percentage of one core over NS.
cpu_pct() { awk -v t="$1" -v hz="$hz" -v ns="$2" -v d="$3" 'BEGIN {printf "%.*f", d, 100 * t / hz / (ns / 1e9)}'; }
hz=$(getconf CLK_TCK)

log "starting the binary on $scenario (port $port)"
start=$(now_ns)
"$out/kube-gpu-exporter-sim" --simulate.scenario="$scenario" --web.listen-address="127.0.0.1:$port" --log.level=warn >"$out/exporter.log" 2>&1 &
pid=$!
startup_ms=
deadline=$((start + 30000000000))
while (($(now_ns) < deadline)); do
	if [[ $(scrape "$out/first.txt") == 200 ]] && grep -q '^containerGpuDutyCycle{' "$out/first.txt"; then
		startup_ms=$((($(now_ns) - start) / 1000000))
		break
	fi
	kill -0 "$pid" 2>/dev/null || { cat "$out/exporter.log" >&2; log "the exporter exited"; exit 1; }
	sleep 0.005
done
[[ -n $startup_ms ]] || { log "no complete scrape within 30 s"; exit 1; }
log "first complete scrape after ${startup_ms} ms"

# node_exporter with its default collectors, as the package runs it, but on
# loopback only.
log "starting node_exporter $("$ne_bin" --version 2>&1 | awk 'NR == 1 {print $3}') (port $ne_port)"
start=$(now_ns)
"$ne_bin" --web.listen-address="127.0.0.1:$ne_port" --log.level=warn >"$out/node-exporter.log" 2>&1 &
ne_pid=$!
ne_startup_ms=
deadline=$((start + 30000000000))
while (($(now_ns) < deadline)); do
	if [[ $(scrape "$out/ne-first.txt" "$ne_url") == 200 ]]; then
		ne_startup_ms=$((($(now_ns) - start) / 1000000))
		break
	fi
	kill -0 "$ne_pid" 2>/dev/null || { cat "$out/node-exporter.log" >&2; log "node_exporter exited"; exit 1; }
	sleep 0.005
done
[[ -n $ne_startup_ms ]] || { log "node_exporter: no scrape within 30 s"; exit 1; }
log "node_exporter answered after ${ne_startup_ms} ms"
log "soaking both for ${soak} s at one scrape a second"

t0=$(now_ns)
c0=$(cpu_ticks) ne_c0=$(cpu_ticks "$ne_pid")
for ((i = 1; i <= soak; i++)); do
	scrape_both
	sleep_until $((t0 + i * 1000000000))
done
ns=$(($(now_ns) - t0))
soak_cpu=$(cpu_pct $(($(cpu_ticks) - c0)) "$ns" 2)
ne_soak_cpu=$(cpu_pct $(($(cpu_ticks "$ne_pid") - ne_c0)) "$ns" 2)
rss=$(status_kib VmRSS) hwm=$(status_kib VmHWM) anon=$(status_kib RssAnon) file=$(status_kib RssFile)
ne_rss=$(status_kib VmRSS "$ne_pid") ne_hwm=$(status_kib VmHWM "$ne_pid")
ne_anon=$(status_kib RssAnon "$ne_pid") ne_file=$(status_kib RssFile "$ne_pid")
cp "/proc/$pid/status" "$out/status-after-soak.txt"
cp "/proc/$ne_pid/status" "$out/node-exporter-status-after-soak.txt"

log "CPU at one scrape every 15 s for ${cpu_secs} s"
t0=$(now_ns)
c0=$(cpu_ticks) ne_c0=$(cpu_ticks "$ne_pid")
for ((i = 0; i * 15 < cpu_secs; i++)); do
	sleep_until $((t0 + i * 15000000000))
	scrape_both
done
sleep_until $((t0 + cpu_secs * 1000000000))
ns=$(($(now_ns) - t0))
idle_cpu=$(cpu_pct $(($(cpu_ticks) - c0)) "$ns" 3)
ne_idle_cpu=$(cpu_pct $(($(cpu_ticks "$ne_pid") - ne_c0)) "$ns" 3)
scrape "$out/last.txt" >/dev/null
scrape "$out/ne-last.txt" "$ne_url" >/dev/null
cleanup
pid= ne_pid=

# --- 3. the table ----------------------------------------------------------

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# median KIND CASE FIELD: the median over the runs of one benchmark's field.
awk '
/^Benchmark/ {
	# BenchmarkScrape/CASE/exporter-2, BenchmarkHandler/CASE/gzip-2,
	# BenchmarkKubeletFetchUncached/CASE-2, BenchmarkStatusPage/CASE-2
	name = $1; sub(/-[0-9]+$/, "", name)
	n3 = split(name, p, "/")
	kind = p[1]; c = p[2]
	if (n3 == 3) kind = kind "/" p[3]
	if (!(c in seen)) { seen[c] = 1; order[++n] = c }
	for (i = 2; i <= NF; i++) {
		if ($i == "ns/op") v[kind, c, "ns", ++cnt[kind, c, "ns"]] = $(i - 1)
		if ($i == "allocs/op") v[kind, c, "al", ++cnt[kind, c, "al"]] = $(i - 1)
		if ($i == "series") v[kind, c, "se", ++cnt[kind, c, "se"]] = $(i - 1)
	}
}
function median(kind, c, f,    k, m, i, j, t, a) {
	m = cnt[kind, c, f]
	if (m == 0) return -1
	for (i = 1; i <= m; i++) {
		if (f == "ratio") a[i] = v["BenchmarkScrape/exporter", c, "ns", i] / v["BenchmarkScrape/floor", c, "ns", i]
		else a[i] = v[kind, c, f, i] + 0
	}
	for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return a[int((m + 1) / 2)]
}
END {
	printf "%-26s %6s %12s %8s %12s %8s %6s %12s %12s %12s\n", "case", "series", "scrape ns", "allocs", "floor ns", "allocs", "ratio", "http+gzip ns", "fetch ns", "page ns"
	for (k = 1; k <= n; k++) {
		c = order[k]
		s = median("BenchmarkScrape/exporter", c, "ns"); f = median("BenchmarkScrape/floor", c, "ns")
		cnt["", c, "ratio"] = cnt["BenchmarkScrape/floor", c, "ns"]
		printf "%-26s %6d %12d %8d %12d %8d %6.2f %12d %12d %12d\n", c, median("BenchmarkScrape/exporter", c, "se"), s, median("BenchmarkScrape/exporter", c, "al"), f, median("BenchmarkScrape/floor", c, "al"), median("", c, "ratio"), median("BenchmarkHandler/gzip", c, "ns"), median("BenchmarkKubeletFetchUncached", c, "ns"), median("BenchmarkStatusPage", c, "ns")
	}
}' "$out/bench.txt" | tee "$out/table.txt"

cat <<EOF | tee -a "$out/table.txt"

scrape: per-scrape registry, collect, text encoding (kubelet reply cached)
floor:  client_golang alone, same series from prepared values
ratio:  median over the runs of scrape/floor, each pair measured back to back
http+gzip: the /metrics handler incl. Go/process collectors and gzip
fetch:  one uncached pod-resources round trip (List + GetAllocatableResources)
page:   one view of the status page at / (the snapshot read, the page model, the template); no scrape builds it

binary on the simulated 8-GPU/110-pod node ($(nproc) CPUs, $(date -u +%Y-%m-%d)):
start to first complete scrape       ${startup_ms} ms
after ${soak} s of 1 s scrapes: VmRSS   $(mib "$rss") MiB (anonymous $(mib "$anon") MiB, file-backed $(mib "$file") MiB)
                                VmHWM   $(mib "$hwm") MiB
CPU at 1 s scrapes                   ${soak_cpu}% of one core
CPU at 15 s scrapes (${cpu_secs} s)         ${idle_cpu}% of one core
failed scrapes                       ${failed}
raw outputs                          $out
EOF

mb() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1e6}'; }
series() { grep -vc '^#' "$1"; }
row() { printf '%-32s %24s %24s\n' "$@"; }
size=$(stat -L -c %s "$size_bin") ne_size=$(stat -L -c %s "$ne_bin")
{
	echo
	echo "side by side, scraped at the same moments (1 s for ${soak} s, then 15 s for ${cpu_secs} s):"
	row "" "kube-gpu-exporter" "node_exporter"
	row "start to first 200 scrape" "${startup_ms} ms" "${ne_startup_ms} ms"
	row "series exposed" "$(series "$out/last.txt")" "$(series "$out/ne-last.txt")"
	row "VmRSS after the 1 s soak" "$(mib "$rss") MiB" "$(mib "$ne_rss") MiB"
	row "  RssAnon" "$(mib "$anon") MiB" "$(mib "$ne_anon") MiB"
	row "  RssFile" "$(mib "$file") MiB" "$(mib "$ne_file") MiB"
	row "VmHWM" "$(mib "$hwm") MiB" "$(mib "$ne_hwm") MiB"
	row "CPU at 1 s scrapes" "${soak_cpu}%" "${ne_soak_cpu}%"
	row "CPU at 15 s scrapes" "${idle_cpu}%" "${ne_idle_cpu}%"
	row "failed scrapes" "$failed" "$ne_failed"
	row "binary size" "$size B ($(mb "$size") MB)" "$ne_size B ($(mb "$ne_size") MB)"
	echo "binary size: $size_pkg built stripped; $ne_bin as packaged"
	verdict=met
	((rss <= ne_rss)) || verdict=missed
	echo "target, VmRSS no larger than node_exporter's: $verdict ($(mib "$rss") vs $(mib "$ne_rss") MiB)"
} | tee -a "$out/table.txt"
