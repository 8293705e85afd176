#!/bin/sh
# The build flags of every kube-gpu-exporter binary, in one place: the
# Makefile, the Dockerfile, test/gpu/run.sh and the end-to-end tests
# (internal/tooltest) all ask this script.
#
#   scripts/build-flags.sh ldflags     -s -w and the version stamps
#   scripts/build-flags.sh cgo-cflags  CGO_CFLAGS for go-nvml's cgo bindings
#
# VERSION, REVISION, BRANCH, BUILD_USER and BUILD_DATE override what git and
# the clock say (the Dockerfile passes its build arguments, having no .git).
set -eu

case "${1:-}" in
ldflags)
	cd "$(dirname "$0")/.."
	version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
	revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
	branch=${BRANCH:-$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)}
	user=${BUILD_USER:-$(id -un 2>/dev/null || echo unknown)@$(hostname 2>/dev/null || echo unknown)}
	date=${BUILD_DATE:-$(date -u +%Y%m%dT%H%M%SZ)}
	pkg=github.com/prometheus/common/version
	echo "-s -w -X $pkg.Version=$version -X $pkg.Revision=$revision -X $pkg.Branch=$branch -X $pkg.BuildUser=$user -X $pkg.BuildDate=$date"
	;;
cgo-cflags)
	# go-nvml's cgo bindings include deprecated NVML declarations; keep the
	# build output readable.
	echo "-O2 -g -Wno-deprecated-declarations"
	;;
*)
	sed -n '2,11p' "$0" >&2
	exit 2
	;;
esac
