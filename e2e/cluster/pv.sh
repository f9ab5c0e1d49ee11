#!/usr/bin/env bash
# The local node has no storage provisioner. `pv.sh NAMESPACE CLAIM [SIZE]` creates what one
# would: a `local` PersistentVolume (a directory under the node's state, default 1Gi) reserved
# for the claim NAMESPACE/CLAIM, e.g. the one the chart's bundled Redis StatefulSet makes
# (data-<release>-redis-0). The kubelet hands the directory to the pod's fsGroup. Idempotent;
# the volume goes with the cluster (`make down`).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ns=${1:?NAMESPACE} claim=${2:?CLAIM} size=${3:-1Gi}
dir=$node/volumes/$ns-$claim
mkdir -p "$dir"
kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-$ns-$claim
  labels: {crane.dev/local-volume: "true"}
spec:
  capacity: {storage: $size}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: $ns, name: $claim}
  local: {path: $dir}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/hostname, operator: In, values: [$node_name]}
YAML
