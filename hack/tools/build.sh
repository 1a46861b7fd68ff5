#!/usr/bin/env bash
# Builds the deployment tools the packaging tests need and hack/control-plane does not: helm (v3),
# from the Go module pinned beside this script (go.mod). kubectl, its built-in kustomize, and
# promtool come from hack/control-plane/build.sh.
#
# The binary lands in ${XDG_CACHE_HOME:-$HOME/.cache}/climatik/bin/tools-<digest>/, where the
# digest covers go.mod, go.sum, the Go toolchain and the build flags; a run that finds it present
# does nothing.
#
# Usage: build.sh            build what is missing (a few minutes on 2 cores)
#        build.sh --print    print bin_dir= and exit, building nothing
#        build.sh --check    exit 0 when everything is present, 1 otherwise
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/climatik"
binaries=(helm)

# The digest changes with a pin, a build flag or the Go toolchain, never with this script's prose.
go_version="$(go env GOVERSION)"
digest="$(
  { cat "$here/go.mod" "$here/go.sum"; printf '%s\n' "$go_version" "flags:trimpath,s,w,cgo0"; } |
    sha256sum | cut -c1-12
)"
bin_dir="$cache_root/bin/tools-$digest"

all_present() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}

case "${1:-}" in
  --print) printf 'bin_dir=%s\n' "$bin_dir"; exit 0 ;;
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
