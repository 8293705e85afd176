#!/usr/bin/env bash
# Real-GPU validation of kube-gpu-exporter: `make test-gpu`. What it measures
# and the targets are in docs/gpu-validation.md.
#
#   test/gpu/run.sh             build the exporter and the driver-only load
#                               generator (load/ptxload.c, with gcc), then run
#                               TestRealGPU with go test
#   test/gpu/run.sh --build     only build the test binary, the exporter and
#                               ptxload into test/gpu/bin, gzipped (about 25 MB
#                               together), to carry to a GPU machine without Go
#   test/gpu/run.sh --prebuilt  run those binaries (no Go, CUDA toolkit or Python
#                               needed: ptxload needs only the driver; nvcc,
#                               PyTorch or CuPy are fallbacks)
#
# GPU_TEST_OUT=<dir> also writes the result table to <dir>. The test only reads
# GPU settings; it never changes them.
set -euo pipefail

if [ -n "${GPU_TEST_OUT:-}" ]; then
	mkdir -p "$GPU_TEST_OUT"
	GPU_TEST_OUT=$(cd "$GPU_TEST_OUT" && pwd)
	export GPU_TEST_OUT
fi
cd "$(dirname "$0")/../.."
root=$PWD
bin=$root/test/gpu/bin
mkdir -p "$bin"

export CGO_ENABLED=1
CGO_CFLAGS=${CGO_CFLAGS:-$(scripts/build-flags.sh cgo-cflags)}
export CGO_CFLAGS

# The production exporter, with the flags `make build` uses: the real-GPU
# test measures the binary that is deployed.
build_exporter() {
	echo "building the exporter"
	go build -trimpath -ldflags "$(scripts/build-flags.sh ldflags)" -o "$bin/kube-gpu-exporter" ./cmd/exporter
}

# The driver-only load generator: plain C that opens libcuda.so.1 at run
# time and has the driver compile its PTX kernel.
build_ptxload() {
	if command -v gcc >/dev/null 2>&1; then
		echo "building test/gpu/load/ptxload.c with $(command -v gcc)"
		gcc -O2 -std=c11 -Wall -Wextra -o "$bin/ptxload" test/gpu/load/ptxload.c -ldl
	fi
}

# The load: ptxload when it was built; otherwise dutyload.cu when a CUDA
# compiler is here, else the test falls back to load/dutyload.py. A driver
# that refuses ptxload's PTX makes the test try nvcc and Python itself.
build_load() {
	if [ -x "$bin/ptxload" ]; then
		export KGE_PTXLOAD=$bin/ptxload
	elif command -v nvcc >/dev/null 2>&1; then
		echo "building test/gpu/load/dutyload.cu with $(command -v nvcc)"
		nvcc -O2 -o "$bin/dutyload" test/gpu/load/dutyload.cu
		export KGE_DUTYLOAD=$bin/dutyload
	else
		echo "neither gcc nor nvcc found: the load will be test/gpu/load/dutyload.py (PyTorch or CuPy)"
	fi
}

case "${1:-}" in
"")
	build_exporter
	build_ptxload
	build_load
	KUBE_GPU_EXPORTER_BINARY=$bin/kube-gpu-exporter go test -tags gpu -run '^TestRealGPU$' -count=1 -v -timeout 8m ./test/gpu/
	;;
--build)
	build_exporter
	build_ptxload
	echo "building the test binary"
	go test -c -tags gpu -trimpath -ldflags '-s -w' -o "$bin/gpu.test" ./test/gpu
	gzip -9f "$bin/gpu.test" "$bin/kube-gpu-exporter" "$bin/ptxload"
	ls -l "$bin"
	;;
--prebuilt)
	for f in gpu.test kube-gpu-exporter ptxload; do
		if [ -f "$bin/$f.gz" ]; then
			gzip -dc "$bin/$f.gz" >"$bin/$f"
			chmod +x "$bin/$f"
		fi
		[ -x "$bin/$f" ] || { echo "$bin/$f missing: run test/gpu/run.sh --build first" >&2; exit 1; }
	done
	build_load
	cd test/gpu
	KUBE_GPU_EXPORTER_BINARY=$bin/kube-gpu-exporter ./bin/gpu.test -test.run '^TestRealGPU$' -test.count=1 -test.v -test.timeout 8m
	;;
*)
	sed -n '2,16p' "$0" >&2
	exit 2
	;;
esac
