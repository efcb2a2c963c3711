#!/usr/bin/env bash
# Checks the manifests against the Kubernetes API schema (strict: unknown fields are errors) with
# kubernetes-validate from PyPI, which bundles the schemas, so it runs without a cluster or network access
# beyond PyPI.
set -euo pipefail
cd "$(dirname "$0")"
venv="${TMPDIR:-/tmp}/graft-kubernetes-validate"
[ -x "$venv/bin/kubernetes-validate" ] || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==1.37.0"
}
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "${KUBERNETES_VERSION:-1.37.0}" ./*.yaml
