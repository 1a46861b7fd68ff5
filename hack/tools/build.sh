#!/usr/bin/env bash
# Builds the deployment tools the packaging tests need and hack/control-plane does not: helm (v3),
# from the Go module pinned beside this script (go.mod), and the Prometheus Operator's
# ServiceMonitor and PrometheusRule CRDs, taken from its pinned Go module, so the API server can
# check the chart's monitoring objects (server-side dry run). kubectl, its built-in kustomize,
# and promtool come from hack/control-plane/build.sh.
#
# The binary lands in ${XDG_CACHE_HOME:-$HOME/.cache}/climatik/bin/tools-<digest>/, where the
# digest covers go.mod, go.sum, the Go toolchain and the build flags; the CRDs in
# .../crds/tools-<digest of their pin>/. A run that finds everything present does nothing.
#
# Usage: build.sh            build what is missing (a few minutes on 2 cores)
#        build.sh --print    print bin_dir= and crd_dir= and exit, building nothing
#        build.sh --check    exit 0 when everything is present, 1 otherwise
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/climatik"
binaries=(helm)
# module@version and the CRD files inside it.
crd_module="github.com/prometheus-operator/prometheus-operator@v0.85.0"
crd_files=(
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
  example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml
)

# The digest changes with a pin, a build flag or the Go toolchain, never with this script's prose.
go_version="$(go env GOVERSION)"
digest="$(
  { cat "$here/go.mod" "$here/go.sum"; printf '%s\n' "$go_version" "flags:trimpath,s,w,cgo0"; } |
    sha256sum | cut -c1-12
)"
bin_dir="$cache_root/bin/tools-$digest"
crd_dir="$cache_root/crds/tools-$(printf '%s\n' "$crd_module" "${crd_files[@]}" | sha256sum | cut -c1-12)"

helm_present() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}
crds_present() {
  local f
  for f in "${crd_files[@]}"; do [[ -s "$crd_dir/$(basename "$f")" ]] || return 1; done
}
all_present() { helm_present && crds_present; }

case "${1:-}" in
  --print) printf 'bin_dir=%s\ncrd_dir=%s\n' "$bin_dir" "$crd_dir"; exit 0 ;;
  --check) all_present; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--print|--check]" >&2; exit 2 ;;
esac

if all_present; then
  echo "tools: $(basename "$bin_dir") already built in $bin_dir"
  exit 0
fi

start=$(date +%s)
log() { printf '[tools %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - start))" "$*"; }

mkdir -p "$bin_dir"
# Two builds at once (tox and a developer) would fight over the same outputs.
exec 9>"$cache_root/tools-build.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/tools-build.lock; waiting"
  flock 9
fi
if all_present; then log "built by the other run"; exit 0; fi

# 2 cores are shared with other work: bound parallelism and never let `go` fetch a toolchain.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
export GOMAXPROCS="${CLIMATIK_BUILD_PROCS:-2}"

# go build writes into a scratch dir first so an interrupted build never leaves a half binary
# that the all_present check would trust.
scratch="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

if ! crds_present; then
  log "extracting the Prometheus Operator's CRDs from $crd_module into $crd_dir"
  # From outside any module, so go.sum here does not record it (nothing here builds it).
  module_dir="$(cd "$scratch" && GOFLAGS= go mod download -json "$crd_module" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$crd_dir"
  for f in "${crd_files[@]}"; do
    cp "$module_dir/$f" "$scratch/$(basename "$f")"
    mv -f "$scratch/$(basename "$f")" "$crd_dir/$(basename "$f")"
  done
fi
if helm_present; then log "done: helm was already built"; exit 0; fi

# A go.mod line is either `require mod vX` or, inside a require block, `mod vX`.
pinned() { awk -v m="$1" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$here/go.mod"; }
helm_version="$(pinned helm.sh/helm/v3)"
log "building helm $helm_version ($go_version) into $bin_dir"
# helm prints its version from these variables; without them `helm version` says v3.x-dev.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
# ... and assumes Kubernetes 1.20 for .Capabilities unless told the client-go it was built with,
# as helm's own Makefile does.
k8s_minor="$(pinned k8s.io/client-go | cut -d. -f2)"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
(cd "$here" && go build -p "$GOMAXPROCS" -trimpath -ldflags="$ldflags" -o "$scratch/" \
  helm.sh/helm/v3/cmd/helm)
mv -f "$scratch/helm" "$bin_dir/helm"

all_present
log "done: helm $helm_version in $bin_dir"
