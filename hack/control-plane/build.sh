#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by `climatik dev-cluster` and the integration
# tests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, prometheus,
# promtool) from the Go modules pinned beside this script, and extracts third-party CRDs (KEDA,
# KServe, VPA) from their own Go modules. There is no Docker here, so we compile the parts.
#
# Results land in ${XDG_CACHE_HOME:-$HOME/.cache}/climatik/{bin,crds}/<version-set>/, where the
# version set is a digest of every pin; a run that finds everything present does nothing.
#
# Usage: build.sh [--with ADDONS]           build what is missing (the first run takes 20+ minutes
#                                           on 2 cores; add-ons add their own, see docs/dev-cluster.md)
#        build.sh --print                   print bin_dir=, crd_dir=, kwok_stages=, keda_*, kserve_*, vpa_*
#        build.sh --check [--with ADDONS]   exit 0 when everything is present, 1 otherwise
#
# ADDONS is a comma-separated list of `keda`, `kserve` and `vpa`. `keda` also builds the KEDA operator and metrics
# adapter and extracts KEDA's six CRDs and its RBAC manifests; `kserve` builds KServe's controller
# (`cmd/manager`) and extracts its CRDs, its ClusterRole, its `inferenceservice-config` ConfigMap
# and its webhook configurations. Each add-on is a version set of its own, so pinning one never
# rebuilds Kubernetes or another add-on, and a Kubernetes pin never rebuilds an add-on.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/climatik"

# Third-party CRDs: module@version and the file inside the module. The KServe module list is
# refused by the proxy, but individual versions are served; v0.20.0 is the newest one served.
crd_pins=(
  "github.com/kedacore/keda/v2@v2.21.0 config/crd/bases/keda.sh_scaledobjects.yaml"
  "github.com/kserve/kserve@v0.20.0 config/crd/full/serving.kserve.io_inferenceservices.yaml"
  "k8s.io/autoscaler/vertical-pod-autoscaler@v1.8.1 deploy/vpa-v1-crd-gen.yaml"
)
kube_version="v1.37.2"
prometheus_version="3.16.0" # github.com/prometheus/prometheus v0.316.0
# kwok's binary runs no stage unless given one; these are the stages kwokctl installs by default
# (nodes become Ready and keep a lease, pods become Running), taken from the pinned kwok module.
kwok_stages=(
  kustomize/stage/node/fast/node-initialize.yaml
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  kustomize/stage/pod/fast/pod-ready.yaml
  kustomize/stage/pod/fast/pod-complete.yaml
  kustomize/stage/pod/fast/pod-delete.yaml
)
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok prometheus promtool)
modules=(etcd kube kwok prometheus)

# The version set changes whenever a pin, a build flag or the Go toolchain changes, and never
# because this script's prose changed, so editing comments does not force a 20-minute rebuild.
go_version="$(go env GOVERSION)"
version_set="$(
  {
    for m in "${modules[@]}"; do cat "$here/$m/go.mod" "$here/$m/go.sum"; done
    cat "$here/etcd/cmd/etcd/main.go"
    printf '%s\n' "${crd_pins[@]}" "$kube_version" "$prometheus_version" "$go_version" "flags:trimpath,s,w,cgo0"
  } | sha256sum | cut -c1-12
)"
version_set="k8s-${kube_version}-${version_set}"
bin_dir="$cache_root/bin/$version_set"
crd_dir="$cache_root/crds/$version_set"
stages_file="$cache_root/kwok-stages/$version_set/stages.yaml"

crd_file_name() { basename "${1#* }"; }
module_dir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

all_present() {
  local b p
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
  for p in "${crd_pins[@]}"; do [[ -s "$crd_dir/$(crd_file_name "$p")" ]] || return 1; done
  [[ -s "$stages_file" ]]
}

# KEDA (`--with keda`): its own module, its own version set, its own output directories.
keda_module="github.com/kedacore/keda/v2"
keda_version="$(awk -v m="$keda_module" '$1 == "require" && $2 == m {print $3} $1 == m {print $2}' \
  "$here/keda/go.mod" | head -n 1)"
keda_binaries=(keda-operator keda-adapter)
keda_crds=(
  config/crd/bases/keda.sh_scaledobjects.yaml
  config/crd/bases/keda.sh_scaledjobs.yaml
  config/crd/bases/keda.sh_triggerauthentications.yaml
  config/crd/bases/keda.sh_clustertriggerauthentications.yaml
  config/crd/bases/eventing.keda.sh_cloudeventsources.yaml
  config/crd/bases/eventing.keda.sh_clustercloudeventsources.yaml
)
# KEDA's own RBAC: the operator's roles and the metrics adapter's (auth delegation, reading the
# aggregation layer's client CA, and letting the HPA controller read external metrics).
keda_rbac=(
  config/rbac/role.yaml
  config/rbac/role_binding.yaml
  config/metrics-server/role.yaml
  config/metrics-server/role_binding.yaml
)
keda_set="$(
  {
    cat "$here/keda/go.mod" "$here/keda/go.sum"
    printf '%s\n' "${keda_crds[@]}" "${keda_rbac[@]}" "$go_version" "flags:trimpath,s,w,cgo0,version"
  } | sha256sum | cut -c1-12
)"
keda_set="keda-${keda_version}-${keda_set}"
keda_bin_dir="$cache_root/bin/$keda_set"
keda_crd_dir="$cache_root/crds/$keda_set"
keda_rbac_dir="$cache_root/rbac/$keda_set"

keda_present() {
  local b f
  for b in "${keda_binaries[@]}"; do [[ -x "$keda_bin_dir/$b" ]] || return 1; done
  for f in "${keda_crds[@]}"; do [[ -s "$keda_crd_dir/$(basename "$f")" ]] || return 1; done
  for f in "${keda_rbac[@]}"; do [[ -s "$keda_rbac_dir/$(folder_prefixed_name "$f")" ]] || return 1; done
}
# Two manifests may share a name (role.yaml); prefix the folder they come from.
folder_prefixed_name() { local d; d="$(dirname "$1")"; printf '%s-%s' "${d##*/}" "$(basename "$1")"; }

# KServe (`--with kserve`): its own module, its own version set, its own output directories.
kserve_module="github.com/kserve/kserve"
kserve_version="$(awk -v m="$kserve_module" '$1 == "require" && $2 == m {print $3} $1 == m {print $2}' \
  "$here/kserve/go.mod" | head -n 1)"
# Every CRD the manager's caches wait on: InferenceService, ServingRuntime (watched), the
# TrainedModel and InferenceGraph controllers' own kinds, and ClusterServingRuntime (watched when
# served). InferenceService's is among the base CRDs too; `up` applies it once.
kserve_crds=(
  config/crd/full/serving.kserve.io_inferenceservices.yaml
  config/crd/full/serving.kserve.io_servingruntimes.yaml
  config/crd/full/serving.kserve.io_clusterservingruntimes.yaml
  config/crd/full/serving.kserve.io_trainedmodels.yaml
  config/crd/full/serving.kserve.io_inferencegraphs.yaml
)
# The manager's ClusterRole, the ConfigMap it reads at start-up and at every reconcile, and its
# webhook configurations (`up` points them at the process and binds the role itself, because
# KServe leaves the namespace of both to kustomize).
# And the ClusterServingRuntime KServe installs for `modelFormat: huggingface`, which
# `examples/kserve-keda.yaml` selects (its image is never pulled: kwok runs the pods).
kserve_manifests=(
  config/rbac/role.yaml
  config/configmap/inferenceservice.yaml
  config/webhook/manifests.yaml
  config/runtimes/kserve-huggingfaceserver.yaml
)
kserve_set="$(
  {
    cat "$here/kserve/go.mod" "$here/kserve/go.sum"
    printf '%s\n' "${kserve_crds[@]}" "${kserve_manifests[@]}" "$go_version" "flags:trimpath,s,w,cgo0"
  } | sha256sum | cut -c1-12
)"
kserve_set="kserve-${kserve_version}-${kserve_set}"
kserve_bin_dir="$cache_root/bin/$kserve_set"
kserve_crd_dir="$cache_root/crds/$kserve_set"
kserve_manifest_dir="$cache_root/manifests/$kserve_set"

kserve_present() {
  local f
  [[ -x "$kserve_bin_dir/kserve-manager" ]] || return 1
  for f in "${kserve_crds[@]}"; do [[ -s "$kserve_crd_dir/$(basename "$f")" ]] || return 1; done
  for f in "${kserve_manifests[@]}"; do
    [[ -s "$kserve_manifest_dir/$(folder_prefixed_name "$f")" ]] || return 1
  done
}

# VPA (`--with vpa`): VPA's three components, and metrics-server for the resource metrics API the
# recommender reads; two modules (metrics-server builds against older k8s.io modules than VPA's)
# but one version set. kwok serves kubelet-style resource metrics from per-pod usage annotations
# when given the `Metric` and `ClusterResourceUsage` of its `kustomize/metrics/usage`.
vpa_module="k8s.io/autoscaler/vertical-pod-autoscaler"
vpa_version="$(awk -v m="$vpa_module" '$1 == "require" && $2 == m {print $3} $1 == m {print $2}' \
  "$here/vpa/go.mod" | head -n 1)"
metrics_server_module="sigs.k8s.io/metrics-server"
metrics_server_version="$(awk -v m="$metrics_server_module" \
  '$1 == "require" && $2 == m {print $3} $1 == m {print $2}' "$here/metrics-server/go.mod" | head -n 1)"
vpa_binaries=(vpa-recommender vpa-updater vpa-admission-controller metrics-server)
kwok_metrics=(
  kustomize/metrics/usage/usage-from-annotation.yaml
  kustomize/metrics/resource/metrics-resource.yaml
)
# Their own RBAC (`up` runs each as its ServiceAccount): module@version, file, name in the cache.
vpa_manifests=(
  "$vpa_module@$vpa_version deploy/vpa-rbac.yaml vpa-rbac.yaml"
  "$metrics_server_module@$metrics_server_version manifests/base/rbac.yaml metrics-server-rbac.yaml"
)
vpa_set="$(
  {
    cat "$here/vpa/go.mod" "$here/vpa/go.sum" "$here/metrics-server/go.mod" "$here/metrics-server/go.sum"
    cat "$here/kwok/go.mod"
    printf '%s\n' "${kwok_metrics[@]}" "${vpa_manifests[@]}" "$go_version" "flags:trimpath,s,w,cgo0,version"
  } | sha256sum | cut -c1-12
)"
vpa_set="vpa-${vpa_version}-${vpa_set}"
vpa_bin_dir="$cache_root/bin/$vpa_set"
vpa_manifest_dir="$cache_root/manifests/$vpa_set"
kwok_metrics_file="$cache_root/kwok-metrics/$vpa_set/metrics.yaml"

vpa_present() {
  local b m
  for b in "${vpa_binaries[@]}"; do [[ -x "$vpa_bin_dir/$b" ]] || return 1; done
  for m in "${vpa_manifests[@]}"; do [[ -s "$vpa_manifest_dir/${m##* }" ]] || return 1; done
  [[ -s "$kwok_metrics_file" ]]
}

usage="usage: $0 [--print|--check] [--with keda,kserve,vpa]"
mode="build" with_keda=false with_kserve=false with_vpa=false
with_addons() {
  local name names
  IFS=, read -r -a names <<<"$1"
  for name in "${names[@]}"; do
    case "$name" in
      keda) with_keda=true ;;
      kserve) with_kserve=true ;;
      vpa) with_vpa=true ;;
      *) echo "$0: unknown add-on '$name' (known: keda, kserve, vpa)" >&2; exit 2 ;;
    esac
  done
}
while (($#)); do
  case "$1" in
    --print) mode="print" ;;
    --check) mode="check" ;;
    --with)
      [[ -n "${2:-}" ]] || { echo "$usage" >&2; exit 2; }
      with_addons "$2"; shift ;;
    --with=*) with_addons "${1#--with=}" ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done

wanted_present() {
  all_present && { ! $with_keda || keda_present; } && { ! $with_kserve || kserve_present; } &&
    { ! $with_vpa || vpa_present; }
}

case "$mode" in
  print)
    printf 'bin_dir=%s\ncrd_dir=%s\nkwok_stages=%s\nversion_set=%s\n' \
      "$bin_dir" "$crd_dir" "$stages_file" "$version_set"
    printf 'keda_bin_dir=%s\nkeda_crd_dir=%s\nkeda_rbac_dir=%s\nkeda_version_set=%s\n' \
      "$keda_bin_dir" "$keda_crd_dir" "$keda_rbac_dir" "$keda_set"
    printf 'kserve_bin_dir=%s\nkserve_crd_dir=%s\nkserve_manifest_dir=%s\nkserve_version_set=%s\n' \
      "$kserve_bin_dir" "$kserve_crd_dir" "$kserve_manifest_dir" "$kserve_set"
    printf 'vpa_bin_dir=%s\nvpa_manifest_dir=%s\nvpa_kwok_metrics=%s\nvpa_version_set=%s\n' \
      "$vpa_bin_dir" "$vpa_manifest_dir" "$kwok_metrics_file" "$vpa_set"
    exit 0 ;;
  check) wanted_present; exit $? ;;
esac

if wanted_present; then
  echo "control-plane: $version_set already built in $bin_dir"
  $with_keda && echo "control-plane: $keda_set already built in $keda_bin_dir"
  $with_kserve && echo "control-plane: $kserve_set already built in $kserve_bin_dir"
  $with_vpa && echo "control-plane: $vpa_set already built in $vpa_bin_dir"
  exit 0
fi

start=$(date +%s)
log() { printf '[control-plane %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - start))" "$*"; }

mkdir -p "$bin_dir" "$crd_dir" "$(dirname "$stages_file")"
# Two builds at once (tox and a developer) would fight over the same outputs.
exec 9>"$cache_root/build.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/build.lock; waiting"
  flock 9
fi
if wanted_present; then log "built by the other run"; exit 0; fi

# 2 cores are shared with other work: bound parallelism and never let `go` fetch a toolchain.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"
export GOMAXPROCS="${CLIMATIK_BUILD_PROCS:-2}"
build_flags=(-p "$GOMAXPROCS" -trimpath)

# go build writes into a scratch dir first so an interrupted build never leaves a half binary
# that the all_present check would trust.
scratch="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

missing() { local b; for b in "$@"; do [[ -x "$bin_dir/$b" ]] || return 0; done; return 1; }
install_bins() { local b; for b in "$@"; do mv -f "$scratch/$b" "$bin_dir/$b"; done; }

log "version set $version_set ($go_version); output $bin_dir"

if missing etcd; then
  log "building etcd (go.etcd.io/etcd/server/v3 $(awk '/etcd\/server\/v3 /{print $NF}' "$here/etcd/go.mod"))"
  (cd "$here/etcd" && go build "${build_flags[@]}" -ldflags='-s -w' -o "$scratch/etcd" ./cmd/etcd)
  install_bins etcd
  log "built etcd"
fi

if missing kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ($kube_version; the long one)"
  minor="${kube_version#v1.}"; minor="${minor%%.*}"
  kube_ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean"
  done
  # One invocation shares the compilation of the common packages between the four commands.
  (cd "$here/kube" && go build "${build_flags[@]}" -ldflags="$kube_ldflags" -o "$scratch/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  install_bins kube-apiserver kube-controller-manager kube-scheduler kubectl
  log "built kube-apiserver, kube-controller-manager, kube-scheduler, kubectl"
fi

if missing kwok; then
  log "building kwok (sigs.k8s.io/kwok $(awk '/sigs.k8s.io\/kwok /{print $NF}' "$here/kwok/go.mod"))"
  (cd "$here/kwok" && go build "${build_flags[@]}" -ldflags='-s -w' -o "$scratch/" sigs.k8s.io/kwok/cmd/kwok)
  install_bins kwok
  log "built kwok"
fi

if missing prometheus promtool; then
  log "building prometheus, promtool ($prometheus_version)"
  prom_ldflags="-s -w -X github.com/prometheus/common/version.Version=$prometheus_version"
  if (cd "$here/prometheus" && go build "${build_flags[@]}" -ldflags="$prom_ldflags" -o "$scratch/" \
    github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool); then
    install_bins prometheus promtool
    log "built prometheus, promtool"
  elif [[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]]; then
    log "prometheus did not build from the module; falling back to Debian's /usr/bin/prometheus"
    ln -sf /usr/bin/prometheus "$bin_dir/prometheus"
    ln -sf /usr/bin/promtool "$bin_dir/promtool"
  else
    log "prometheus did not build; install Debian's package (apt-get install prometheus) and rerun"
    exit 1
  fi
fi

for p in "${crd_pins[@]}"; do
  mod="${p%% *}" file="${p#* }"
  dest="$crd_dir/$(crd_file_name "$p")"
  [[ -s "$dest" ]] && continue
  log "fetching CRD $file from $mod"
  dir="$(module_dir "$mod")"
  if [[ -z "$dir" || ! -s "$dir/$file" ]]; then
    log "module $mod has no $file"
    exit 1
  fi
  install -m 0644 "$dir/$file" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
done

if [[ ! -s "$stages_file" ]]; then
  kwok_mod="sigs.k8s.io/kwok@$(awk '/sigs.k8s.io\/kwok /{print $NF}' "$here/kwok/go.mod")"
  log "extracting kwok's default stages from $kwok_mod"
  dir="$(module_dir "$kwok_mod")"
  for f in "${kwok_stages[@]}"; do cat "$dir/$f"; printf '\n---\n'; done > "$stages_file.tmp"
  mv -f "$stages_file.tmp" "$stages_file"
fi

all_present
log "done: $version_set in $bin_dir and $crd_dir"

if $with_keda && ! keda_present; then
  mkdir -p "$keda_bin_dir" "$keda_crd_dir" "$keda_rbac_dir"
  if ! [[ -x "$keda_bin_dir/keda-operator" && -x "$keda_bin_dir/keda-adapter" ]]; then
    log "building keda-operator, keda-adapter ($keda_module $keda_version; about 15 minutes cold)"
    keda_scratch="$(mktemp -d "$keda_bin_dir/.build.XXXXXX")"
    trap 'rm -rf "$scratch" "$keda_scratch"' EXIT
    keda_ldflags="-s -w -X $keda_module/version.Version=${keda_version#v}"
    keda_ldflags+=" -X $keda_module/version.GitCommit=$keda_version"
    # One invocation shares the compilation of the packages both commands use (most of them).
    (cd "$here/keda" && go build "${build_flags[@]}" -ldflags="$keda_ldflags" -o "$keda_scratch/" \
      "$keda_module/cmd/operator" "$keda_module/cmd/adapter")
    mv -f "$keda_scratch/operator" "$keda_bin_dir/keda-operator"
    mv -f "$keda_scratch/adapter" "$keda_bin_dir/keda-adapter"
    log "built keda-operator, keda-adapter"
  fi
  dir="$(cd "$here/keda" && module_dir "$keda_module@$keda_version")"
  for f in "${keda_crds[@]}" "${keda_rbac[@]}"; do
    if [[ "$f" == config/crd/* ]]; then dest="$keda_crd_dir/$(basename "$f")"
    else dest="$keda_rbac_dir/$(folder_prefixed_name "$f")"; fi
    [[ -s "$dest" ]] && continue
    if [[ -z "$dir" || ! -s "$dir/$f" ]]; then
      log "module $keda_module@$keda_version has no $f"
      exit 1
    fi
    install -m 0644 "$dir/$f" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
  done
  keda_present
  log "done: $keda_set in $keda_bin_dir, $keda_crd_dir and $keda_rbac_dir"
fi

if $with_kserve && ! kserve_present; then
  mkdir -p "$kserve_bin_dir" "$kserve_crd_dir" "$kserve_manifest_dir"
  if ! [[ -x "$kserve_bin_dir/kserve-manager" ]]; then
    log "building kserve-manager ($kserve_module $kserve_version cmd/manager)"
    kserve_scratch="$(mktemp -d "$kserve_bin_dir/.build.XXXXXX")"
    trap 'rm -rf "$scratch" "${keda_scratch:-}" "$kserve_scratch"' EXIT
    (cd "$here/kserve" && go build "${build_flags[@]}" -ldflags='-s -w' -o "$kserve_scratch/" \
      "$kserve_module/cmd/manager")
    mv -f "$kserve_scratch/manager" "$kserve_bin_dir/kserve-manager"
    log "built kserve-manager"
  fi
  dir="$(cd "$here/kserve" && module_dir "$kserve_module@$kserve_version")"
  for f in "${kserve_crds[@]}" "${kserve_manifests[@]}"; do
    if [[ "$f" == config/crd/* ]]; then dest="$kserve_crd_dir/$(basename "$f")"
    else dest="$kserve_manifest_dir/$(folder_prefixed_name "$f")"; fi
    [[ -s "$dest" ]] && continue
    if [[ -z "$dir" || ! -s "$dir/$f" ]]; then
      log "module $kserve_module@$kserve_version has no $f"
      exit 1
    fi
    install -m 0644 "$dir/$f" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
  done
  kserve_present
  log "done: $kserve_set in $kserve_bin_dir, $kserve_crd_dir and $kserve_manifest_dir"
fi

if $with_vpa && ! vpa_present; then
  mkdir -p "$vpa_bin_dir" "$vpa_manifest_dir" "$(dirname "$kwok_metrics_file")"
  vpa_scratch="$(mktemp -d "$vpa_bin_dir/.build.XXXXXX")"
  trap 'rm -rf "$scratch" "${keda_scratch:-}" "${kserve_scratch:-}" "$vpa_scratch"' EXIT
  if ! [[ -x "$vpa_bin_dir/vpa-recommender" && -x "$vpa_bin_dir/vpa-updater" &&
    -x "$vpa_bin_dir/vpa-admission-controller" ]]; then
    log "building vpa-recommender, vpa-updater, vpa-admission-controller ($vpa_module $vpa_version)"
    # The three commands share most packages; VPA's version is a constant, no ldflags needed.
    (cd "$here/vpa" && go build "${build_flags[@]}" -ldflags='-s -w' -o "$vpa_scratch/" \
      "$vpa_module/pkg/recommender" "$vpa_module/pkg/updater" "$vpa_module/pkg/admission-controller")
    for b in recommender updater admission-controller; do
      mv -f "$vpa_scratch/$b" "$vpa_bin_dir/vpa-$b"
    done
    log "built vpa-recommender, vpa-updater, vpa-admission-controller"
  fi
  if ! [[ -x "$vpa_bin_dir/metrics-server" ]]; then
    log "building metrics-server ($metrics_server_module $metrics_server_version)"
    ms_ldflags="-s -w -X k8s.io/client-go/pkg/version.gitVersion=$metrics_server_version"
    ms_ldflags+=" -X k8s.io/client-go/pkg/version.gitTreeState=clean"
    (cd "$here/metrics-server" && go build "${build_flags[@]}" -ldflags="$ms_ldflags" \
      -o "$vpa_scratch/" "$metrics_server_module/cmd/metrics-server")
    mv -f "$vpa_scratch/metrics-server" "$vpa_bin_dir/metrics-server"
    log "built metrics-server"
  fi
  if [[ ! -s "$kwok_metrics_file" ]]; then
    kwok_mod="sigs.k8s.io/kwok@$(awk '/sigs.k8s.io\/kwok /{print $NF}' "$here/kwok/go.mod")"
    log "extracting kwok's resource metrics configuration from $kwok_mod"
    dir="$(module_dir "$kwok_mod")"
    for f in "${kwok_metrics[@]}"; do cat "$dir/$f"; printf '\n---\n'; done >"$kwok_metrics_file.tmp"
    mv -f "$kwok_metrics_file.tmp" "$kwok_metrics_file"
  fi
  for m in "${vpa_manifests[@]}"; do
    read -r mod file name <<<"$m"
    dest="$vpa_manifest_dir/$name"
    [[ -s "$dest" ]] && continue
    dir="$(cd "$here/vpa" && module_dir "$mod")"
    if [[ -z "$dir" || ! -s "$dir/$file" ]]; then
      log "module $mod has no $file"
      exit 1
    fi
    install -m 0644 "$dir/$file" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
  done
  vpa_present
  log "done: $vpa_set in $vpa_bin_dir, $vpa_manifest_dir and $kwok_metrics_file"
fi
