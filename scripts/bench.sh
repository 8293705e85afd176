#!/usr/bin/env bash
# Measures the exporter against its targets and prints one table:
#
#   1. go benchmarks: a full scrape (collect + text encoding) per simulated
#      node against client_golang's floor for the same series, the /metrics
#      handler with gzip, and one uncached kubelet round trip;
#   2. the built binary on a simulated node with 8 GPUs and 110 pods (8 of
#      them holding a GPU): time from launch to the first complete scrape,
#      memory after BENCH_SOAK_SECONDS of one scrape a second, and CPU at one
#      scrape every 15 seconds over BENCH_CPU_SECONDS.
#
# Environment:
#   BENCH_SOAK_SECONDS  duration of the 1 s scrape soak (default 300)
#   BENCH_CPU_SECONDS   duration of the 15 s interval CPU measurement (default 120)
#   BENCH_TIME          -benchtime of each benchmark (default 1s)
#   BENCH_COUNT         runs of the benchmarks; medians are shown (default 3)
#   BENCH_PORT          first port tried for the binary (default 19871)
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
out=${BENCH_OUT:-$(mktemp -d -t kge-bench-XXXXXX)}
mkdir -p "$out"

pid=
cleanup() {
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		wait "$pid" 2>/dev/null || true
	fi
}
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
	go test -run '^$' -bench 'Handler/.*/gzip' -benchmem -benchtime="$benchtime" ./cmd/exporter/ >>"$out/bench.txt"
done

# --- 2. the binary on a simulated node -------------------------------------

log "building the binary"
go build -o "$out/kube-gpu-exporter-sim" ./cmd/kube-gpu-exporter-sim

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

now_ns() { date +%s%N; }
sleep_until() { # ns since the epoch
	local left=$(($1 - $(now_ns)))
	if ((left > 0)); then sleep "$(printf '%d.%09d' $((left / 1000000000)) $((left % 1000000000)))"; fi
}
# scrape fetches /metrics as Prometheus does (gzip) and prints the status.
scrape() { curl -s --compressed -o "$1" -w '%{http_code}' "$url" || true; }
cpu_ticks() { # utime + stime of $pid, in clock ticks
	local stat
	stat=$(<"/proc/$pid/stat")
	stat=${stat##*) } # the fields after the command name
	read -r -a f <<<"$stat"
	echo $((f[11] + f[12])) # fields 14 and 15 of proc(5)
}
status_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
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
log "first complete scrape after ${startup_ms} ms; soaking for ${soak} s at one scrape a second"

failed=0
t0=$(now_ns)
c0=$(cpu_ticks)
for ((i = 1; i <= soak; i++)); do
	[[ $(scrape /dev/null) == 200 ]] || failed=$((failed + 1))
	sleep_until $((t0 + i * 1000000000))
done
soak_cpu=$(awk -v t="$(($(cpu_ticks) - c0))" -v hz="$hz" -v ns="$(($(now_ns) - t0))" 'BEGIN {printf "%.2f", 100 * t / hz / (ns / 1e9)}')
rss=$(status_kib VmRSS) hwm=$(status_kib VmHWM) anon=$(status_kib RssAnon) file=$(status_kib RssFile)
cp "/proc/$pid/status" "$out/status-after-soak.txt"

log "CPU at one scrape every 15 s for ${cpu_secs} s"
t0=$(now_ns)
c0=$(cpu_ticks)
for ((i = 0; i * 15 < cpu_secs; i++)); do
	sleep_until $((t0 + i * 15000000000))
	[[ $(scrape /dev/null) == 200 ]] || failed=$((failed + 1))
done
sleep_until $((t0 + cpu_secs * 1000000000))
idle_cpu=$(awk -v t="$(($(cpu_ticks) - c0))" -v hz="$hz" -v ns="$(($(now_ns) - t0))" 'BEGIN {printf "%.3f", 100 * t / hz / (ns / 1e9)}')
cleanup
pid=

# --- 3. the table ----------------------------------------------------------

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# median KIND CASE FIELD: the median over the runs of one benchmark's field.
awk '
/^Benchmark/ {
	# BenchmarkScrape/CASE/exporter-2, BenchmarkHandler/CASE/gzip-2,
	# BenchmarkKubeletFetchUncached/CASE-2
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
	printf "%-26s %6s %12s %8s %12s %8s %6s %12s %12s\n", "case", "series", "scrape ns", "allocs", "floor ns", "allocs", "ratio", "http+gzip ns", "fetch ns"
	for (k = 1; k <= n; k++) {
		c = order[k]
		s = median("BenchmarkScrape/exporter", c, "ns"); f = median("BenchmarkScrape/floor", c, "ns")
		cnt["", c, "ratio"] = cnt["BenchmarkScrape/floor", c, "ns"]
		printf "%-26s %6d %12d %8d %12d %8d %6.2f %12d %12d\n", c, median("BenchmarkScrape/exporter", c, "se"), s, median("BenchmarkScrape/exporter", c, "al"), f, median("BenchmarkScrape/floor", c, "al"), median("", c, "ratio"), median("BenchmarkHandler/gzip", c, "ns"), median("BenchmarkKubeletFetchUncached", c, "ns")
	}
}' "$out/bench.txt" | tee "$out/table.txt"

cat <<EOF | tee -a "$out/table.txt"

scrape: per-scrape registry, collect, text encoding (kubelet reply cached)
floor:  client_golang alone, same series from prepared values
ratio:  median over the runs of scrape/floor, each pair measured back to back
http+gzip: the /metrics handler incl. Go/process collectors and gzip
fetch:  one uncached pod-resources round trip (List + GetAllocatableResources)

binary on the simulated 8-GPU/110-pod node ($(nproc) CPUs, $(date -u +%Y-%m-%d)):
start to first complete scrape       ${startup_ms} ms
after ${soak} s of 1 s scrapes: VmRSS   $(mib "$rss") MiB (anonymous $(mib "$anon") MiB, file-backed $(mib "$file") MiB)
                                VmHWM   $(mib "$hwm") MiB
CPU at 1 s scrapes                   ${soak_cpu}% of one core
CPU at 15 s scrapes (${cpu_secs} s)         ${idle_cpu}% of one core
failed scrapes                       ${failed}
raw outputs                          $out
EOF
