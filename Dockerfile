# syntax=docker/dockerfile:1
#
# kube-gpu-exporter container image.
#
# The exporter talks to the NVIDIA driver through go-nvml, which dlopens
# libnvidia-ml.so.1 at run time: the binary is built with cgo and runs on a
# glibc base. The driver library itself is NOT in the image; the NVIDIA
# container runtime (NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES=utility)
# or a hostPath mount (see the Helm chart's hostDriver values) provides it.
#
#   docker build \
#     --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     -t kube-gpu-exporter .

ARG GO_IMAGE=golang:1.26-bookworm
# glibc (for dlopen of libnvidia-ml) without OpenSSL, which Go does not use:
# the smallest distroless base that can run a cgo binary.
ARG BASE_IMAGE=gcr.io/distroless/base-nossl-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src

COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

ARG VERSION=dev
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_DATE=unknown
ARG BUILD_USER=docker
# The flags come from scripts/build-flags.sh, as for `make build`; the
# build arguments above stand in for git, which the context lacks. Only the
# production command: the simulator stays out of the image.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    export VERSION REVISION BRANCH BUILD_USER BUILD_DATE && \
    CGO_ENABLED=1 CGO_CFLAGS="$(scripts/build-flags.sh cgo-cflags)" \
    go build -trimpath -buildvcs=false \
      -ldflags "$(scripts/build-flags.sh ldflags)" \
      -o /out/kube-gpu-exporter ./cmd/exporter

FROM ${BASE_IMAGE}

ARG VERSION=dev
ARG REVISION=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="kube-gpu-exporter" \
      org.opencontainers.image.description="Prometheus exporter for GPU utilisation and memory per Kubernetes pod and container" \
      org.opencontainers.image.source="https://github.com/kube-gpu-exporter/kube-gpu-exporter" \
      org.opencontainers.image.url="https://github.com/kube-gpu-exporter/kube-gpu-exporter" \
      org.opencontainers.image.documentation="https://github.com/kube-gpu-exporter/kube-gpu-exporter/blob/main/docs/install.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${BUILD_DATE}"

COPY --from=build /out/kube-gpu-exporter /usr/bin/kube-gpu-exporter

# The image runs as the distroless nonroot user (65532). Reading the kubelet's
# pod-resources socket, which the kubelet creates root-owned and writable by
# root only, needs UID 0: the Helm chart and the kustomize base set
# runAsUser: 0 with every capability dropped.
USER 65532:65532
EXPOSE 9871
ENTRYPOINT ["/usr/bin/kube-gpu-exporter"]
