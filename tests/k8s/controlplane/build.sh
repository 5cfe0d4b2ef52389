#!/usr/bin/env bash
# Builds the CI control plane (main.go: etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler from the Kubernetes release pinned in go.mod) to bin/kastor-controlplane.
#
# Go's build and module caches make a second build quick (see the testing docs in
# README.md for measured cold and warm times). The build runs niced with at most two
# packages compiled at once, because CI and developers share small machines.
# GOFLAGS=-mod=mod lets the go command read go.sum and fetch from the module proxy;
# go.sum pins every module, so the build is reproducible.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: the go command is not on PATH; install Go >= 1.24 to build the control plane" >&2
    exit 1
fi
mkdir -p bin
export GOFLAGS="${GOFLAGS:--mod=mod}"
start=$(date +%s)
nice -n 10 go build -p "${KASTOR_GO_BUILD_JOBS:-2}" -trimpath -o bin/kastor-controlplane .
echo "build.sh: built $(pwd)/bin/kastor-controlplane in $(( $(date +%s) - start ))s"
