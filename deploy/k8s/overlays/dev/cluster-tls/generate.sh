#!/usr/bin/env bash
# Makes the dev overlay's cluster-plane certificates: a throwaway CA and, from it, the scheduler's,
# the executors' and the runner's certificates (Kubernetes TLS Secret layout: tls.crt, tls.key,
# ca.crt). For development only, like the rest of this overlay's credentials; production takes
# cert-manager Certificates (components/cert-manager) or Secrets you create.
#
#   deploy/k8s/overlays/dev/cluster-tls/generate.sh     # then kubectl apply -k deploy/k8s/overlays/dev
#   deploy/k8s/overlays/dev/cluster-tls/generate.sh DIR # into DIR instead (bench/ does this)
set -euo pipefail
cd "${1:-$(dirname "$0")}"
days=3650
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
  -subj "/CN=kalla dev cluster CA" -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$work/ca.key" -out ca.crt 2>/dev/null

# issue NAME SUBJECT_ALT_NAMES: NAME.crt and NAME.key, for both ends of connections.
issue() {
  local name=$1 alt_names=$2
  printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' \
    "${alt_names:+subjectAltName=$alt_names}" >"$work/$name.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
    -keyout "$name.key" -out "$work/$name.csr" 2>/dev/null
  openssl x509 -req -in "$work/$name.csr" -CA ca.crt -CAkey "$work/ca.key" -CAcreateserial \
    -CAserial "$work/ca.srl" -days "$days" -extfile "$work/$name.ext" -out "$name.crt" 2>/dev/null
}
issue scheduler "DNS:kalla-scheduler,DNS:kalla-scheduler.kalla.svc,DNS:kalla-scheduler.kalla.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
issue executor "DNS:kalla-executor"
issue runner ""
echo "made ca.crt and scheduler, executor and runner certificates in $(pwd)"
