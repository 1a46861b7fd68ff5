#!/usr/bin/env bash
# Copies the generated CRDs (crd/*.yaml, the single source of truth, written by `climatik crd`)
# to where the installers need them: kustomize only reads files under its own root, and Helm
# installs CRDs only from the chart's crds/ directory.
#
# Usage: sync-deploy-crds.sh          copy
#        sync-deploy-crds.sh --check  exit 1, naming the stale files, when a copy differs
# tests/integration/test_deploy.py runs the check, so a regenerated CRD cannot ship stale.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
destinations=("$root/deploy/base/crds" "$root/deploy/helm/climatik/crds")
mode="${1:-sync}"
case "$mode" in sync|--check) ;; *) echo "usage: $0 [--check]" >&2; exit 2 ;; esac

shopt -s nullglob
sources=("$root"/crd/*.yaml)
if ((${#sources[@]} == 0)); then echo "no CRDs in $root/crd" >&2; exit 1; fi

stale=0
for dest in "${destinations[@]}"; do
  mkdir -p "$dest"
  for src in "${sources[@]}"; do
    target="$dest/$(basename "$src")"
    if ! cmp -s "$src" "$target"; then
      if [[ "$mode" == --check ]]; then
        echo "stale: ${target#"$root"/} differs from ${src#"$root"/}" >&2
        stale=1
      else
        cp "$src" "$target"
        echo "synced ${target#"$root"/}"
      fi
    fi
  done
  # A CRD removed from crd/ must not linger in a copy.
  for target in "$dest"/*.yaml; do
    if [[ ! -e "$root/crd/$(basename "$target")" ]]; then
      if [[ "$mode" == --check ]]; then
        echo "stale: ${target#"$root"/} has no source in crd/" >&2
        stale=1
      else
        rm -f "$target"
        echo "removed ${target#"$root"/}"
      fi
    fi
  done
done
exit "$stale"
