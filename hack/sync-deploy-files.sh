#!/usr/bin/env bash
# Copies files that have one source of truth to where the installers need them: kustomize reads
# only files under its own root, and a Helm chart only files inside the chart.
#
#   crd/*.yaml (written by `climatik crd`)  -> deploy/base/crds/, deploy/helm/climatik/files/crds/
#   deploy/monitoring/prometheusrule.yaml,
#   deploy/monitoring/grafana-dashboard.json -> deploy/helm/climatik/files/monitoring/
#
# The chart wraps its copies in templates (crds.yaml, prometheusrule.yaml, grafana-dashboard.yaml)
# and never edits them, so the rule text and the dashboard are the same in both installers.
#
# Usage: sync-deploy-files.sh          copy
#        sync-deploy-files.sh --check  exit 1, naming the stale files, when a copy differs
# tests/integration/test_deploy.py runs the check, so an edited source cannot ship stale.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/deploy/helm/climatik"
# source directory | file names (glob) | destination directory
copies=(
  "crd|*.yaml|$root/deploy/base/crds"
  "crd|*.yaml|$chart/files/crds"
  "deploy/monitoring|prometheusrule.yaml grafana-dashboard.json|$chart/files/monitoring"
)
mode="${1:-sync}"
case "$mode" in sync|--check) ;; *) echo "usage: $0 [--check]" >&2; exit 2 ;; esac

shopt -s nullglob
stale=0
report() {
  if [[ "$mode" == --check ]]; then echo "stale: $1" >&2; stale=1; else echo "$2"; fi
}

for entry in "${copies[@]}"; do
  IFS='|' read -r src_dir names_text dest <<<"$entry"
  read -ra names <<<"$names_text"  # split, unglobbed
  sources=()
  for name in "${names[@]}"; do sources+=("$root/$src_dir"/$name); done
  if ((${#sources[@]} == 0)); then echo "no $names_text in $root/$src_dir" >&2; exit 1; fi
  mkdir -p "$dest"
  for src in "${sources[@]}"; do
    target="$dest/$(basename "$src")"
    if ! cmp -s "$src" "$target"; then
      report "${target#"$root"/} differs from ${src#"$root"/}" "synced ${target#"$root"/}"
      [[ "$mode" == --check ]] || cp "$src" "$target"
    fi
  done
  # A file removed from its source must not linger in a copy.
  for name in "${names[@]}"; do
    for target in "$dest"/$name; do
      if [[ ! -e "$root/$src_dir/$(basename "$target")" ]]; then
        report "${target#"$root"/} has no source in $src_dir/" "removed ${target#"$root"/}"
        [[ "$mode" == --check ]] || rm -f "$target"
      fi
    done
  done
done
exit "$stale"
