#!/usr/bin/env bash
# The self-signed option for the placement webhook's certificate, for clusters without
# cert-manager: makes a private CA and a serving certificate for the controller's Service,
# stores them as the Secret the Deployment mounts (climatik-webhook-tls), and puts the CA into
# the MutatingWebhookConfiguration's caBundle. Rerun it before the certificate expires (365 days)
# or after changing the Service name; the controller reloads the mounted files when they change.
#
# Usage: webhook-self-signed-cert.sh [--namespace NS] [--service NAME] [--webhook NAME]
#                                    [--secret NAME] [--days N] [--print]
#   --print  write the Secret and the caBundle patch as YAML on stdout instead of applying them
# Needs openssl and kubectl (KUBECONFIG selects the cluster).
set -euo pipefail

namespace=climatik-system
service=climatik-controller
webhook=climatik-placement
secret=climatik-webhook-tls
days=365
print=false
while (($#)); do
  case "$1" in
    --namespace) namespace="$2"; shift 2 ;;
    --service) service="$2"; shift 2 ;;
    --webhook) webhook="$2"; shift 2 ;;
    --secret) secret="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --print) print=true; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.crt" -days "$days" \
  -subj "/CN=climatik-webhook-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=$service.$namespace.svc" 2>/dev/null
printf '%s\n' \
  "subjectAltName=DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local" \
  "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature" > "$work/ext.cnf"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -out "$work/tls.crt" -days "$days" -extfile "$work/ext.cnf" 2>/dev/null

b64() { base64 < "$1" | tr -d '\n'; }
secret_yaml="apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: $secret
  namespace: $namespace
  labels:
    app.kubernetes.io/name: climatik
    app.kubernetes.io/part-of: climatik
data:
  tls.crt: $(b64 "$work/tls.crt")
  tls.key: $(b64 "$work/tls.key")
  ca.crt: $(b64 "$work/ca.crt")"
# A JSON patch on the first (only) webhook of the configuration.
ca_patch="[{\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/caBundle\", \"value\": \"$(b64 "$work/ca.crt")\"}]"

if $print; then
  printf '%s\n---\n' "$secret_yaml"
  printf '# kubectl patch mutatingwebhookconfiguration %s --type=json -p:\n# %s\n' "$webhook" "$ca_patch"
  exit 0
fi
printf '%s\n' "$secret_yaml" | kubectl apply -f -
kubectl patch mutatingwebhookconfiguration "$webhook" --type=json -p "$ca_patch"
echo "webhook $webhook now trusts the CA of secret $namespace/$secret (valid $days days)"
