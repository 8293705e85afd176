#!/usr/bin/env bash
# Builds the Kubernetes parts the end-to-end tests run (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet) and caches them, keyed
# by version, in the user's cache folder (like Go's own build and module caches, so that a fresh
# clone on the same machine reuses them; KUBE_TOOLS_CACHE overrides it): only
# a version bump rebuilds them. Kubernetes' commands are not published as Go
# modules that build on their own (its go.mod replaces k8s.io/* with
# ./staging), so the module is copied out of the module cache and its staging
# replaces are pointed at the published v0.x modules of the same release.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
GO="${GO:-go}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${KUBE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-gpu-exporter}"
dest="$cache/kube/$KUBE_VERSION-etcd$ETCD_VERSION"
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

# The tests find them in .tools/bin (internal/tooltest.Find).
link() {
	mkdir -p "$root/.tools/bin"
	for b in etcd "${kube_cmds[@]}"; do
		ln -sfn "$dest/$b" "$root/.tools/bin/$b"
	done
}

missing=()
for b in "${kube_cmds[@]}"; do
	[ -x "$dest/$b" ] || missing+=("$b")
done
if [ -x "$dest/etcd" ] && [ ${#missing[@]} -eq 0 ]; then
	link
	exit 0
fi
mkdir -p "$dest"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off

if [ ! -x "$dest/etcd" ]; then
	echo "building etcd $ETCD_VERSION"
	# The etcd server module carries replace directives, which go install
	# refuses; a throwaway module that requires it builds it as published.
	etcdwork="$(mktemp -d)"
	(cd "$etcdwork" && "$GO" mod init etcdbuild >/dev/null 2>&1 &&
		"$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
		"$GO" build -trimpath -o "$dest/etcd" go.etcd.io/etcd/server/v3)
	rm -rf "$etcdwork"
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "building ${missing[*]} $KUBE_VERSION"
	src="$(GOFLAGS=-mod=mod "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[ -d "$src" ] || { echo "k8s.io/kubernetes@$KUBE_VERSION: no module directory" >&2; exit 1; }
	work="$(mktemp -d)"
	trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
	cp -r "$src/." "$work/"
	chmod -R u+w "$work"
	cd "$work"
	rm -rf go.work go.work.sum vendor
	staging="v0${KUBE_VERSION#v1}"
	# The module zip has no staging/ (each of its folders is a module of its
	# own), so every ./staging replace becomes a requirement of the
	# published module of the same release. A few staging modules are not
	# published for every release (k8s.io/sample-cli-plugin v0.37.2) and
	# only Kubernetes' own tests import them: they are dropped, and tidy
	# (-e) does not stop at the test imports it then cannot resolve.
	for mod in $(sed -n 's|^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*|\1|p' go.mod); do
		if "$GO" mod download "$mod@$staging" >/dev/null 2>&1; then
			"$GO" mod edit -dropreplace="$mod" -require="$mod@$staging"
		else
			echo "  $mod@$staging is not published: dropped"
			"$GO" mod edit -dropreplace="$mod" -droprequire="$mod"
		fi
	done
	"$GO" mod tidy -e >/dev/null 2>&1
	# One build for all of them: they share most of their packages.
	pkgs=()
	for b in "${missing[@]}"; do pkgs+=("./cmd/$b"); done
	"$GO" build -trimpath -o "$dest/" "${pkgs[@]}"
fi
link
echo "kube tools $KUBE_VERSION, etcd $ETCD_VERSION built in $(( $(date +%s) - start ))s into $dest"
