#!/usr/bin/env bash
# Builds the pinned toolchain (Kubernetes control plane + kubectl, etcd, helm, kwok, kwokctl)
# from the Go module proxy into a cache outside the repo, keyed by version. A second run builds
# nothing. Prints where the binaries are on the last line of stdout.
set -euo pipefail

K8S_VERSION="${SHARDLET_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${SHARDLET_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${SHARDLET_HELM_VERSION:-v3.22.0}"
KWOK_VERSION="${SHARDLET_KWOK_VERSION:-v0.8.0}"
CACHE="${SHARDLET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardlet}"
BIN="$CACHE/toolchain/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-kwok-$KWOK_VERSION/bin"
WORK="$CACHE/build"

step() { printf 'toolchain: %s\n' "$*" >&2; }
fail() { printf 'toolchain: error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || fail "no Go toolchain on PATH; install Go >= 1.26 (e.g. 'apt-get install golang' is too old: use the go.dev tarball or your distro's golang-1.26)"
GO_MINOR=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$GO_MINOR" -ge 26 ] 2>/dev/null || fail "Go $(go env GOVERSION) is too old: Kubernetes $K8S_VERSION needs Go >= 1.26"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$BIN" "$WORK"
start=$(date +%s)

have() { [ -x "$BIN/$1" ]; }

modfile() { # dir module@version -> path of that version's go.mod in the module cache
  local out
  out=$(cd "$1" && go mod download -json "$2" 2>&1) || {
    printf '%s\n' "$out" | grep -m1 '"Error"' >&2 || true
    fail "step 'go mod download $2' failed (is the version served by the Go module proxy?)"
  }
  printf '%s\n' "$out" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p'
}

build_k8s() {
  local d="$WORK/k8s-$K8S_VERSION" minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$d"
  step "fetching k8s.io/kubernetes@$K8S_VERSION go.mod"
  local gomod
  gomod=$(modfile "$d" "k8s.io/kubernetes@$K8S_VERSION")
  {
    echo "module shardlet.local/k8sbuild"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # every staging module that k8s.io/kubernetes pins at v0.0.0 maps to the matching v0.X.Y tag
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $staging"; done
  } > "$d/go.mod"
  cat > "$d/tools.go" <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  step "resolving Kubernetes $K8S_VERSION dependencies (go mod tidy)"
  (cd "$d" && go mod tidy -e >/dev/null 2>"$d/tidy.log") || { cat "$d/tidy.log" >&2; fail "step 'go mod tidy' for Kubernetes failed"; }
  local date ld
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  step "building kube-apiserver kube-controller-manager kube-scheduler kubectl $K8S_VERSION (slow on a cold cache)"
  (cd "$d" && go build -trimpath -ldflags "$ld" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl) \
    || fail "step 'go build' of the Kubernetes binaries failed (see above)"
}

build_etcd() {
  local d="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$d"
  step "fetching go.etcd.io/etcd/server/v3@$ETCD_VERSION go.mod"
  local gomod
  gomod=$(modfile "$d" "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  {
    echo "module shardlet.local/etcdbuild"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
    echo
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    grep -oE '^\s*go\.etcd\.io/etcd/[a-z0-9/-]+ => \.\./' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $ETCD_VERSION"; done
  } > "$d/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$d/tools.go"
  (cd "$d" && go mod tidy -e >/dev/null 2>"$d/tidy.log") || { cat "$d/tidy.log" >&2; fail "step 'go mod tidy' for etcd failed"; }
  step "building etcd $ETCD_VERSION"
  (cd "$d" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) \
    || fail "step 'go build' of etcd failed (see above)"
}

build_install() { # name module version ldflags
  local d="$WORK/$1-$3"
  mkdir -p "$d"
  step "building $1 $3"
  (cd "$d" && GOBIN="$BIN" go install -trimpath -ldflags "-s -w $4" "$2@$3") \
    || fail "step 'go install $2@$3' failed (see above)"
}

have kube-apiserver && have kube-controller-manager && have kube-scheduler && have kubectl || build_k8s
have etcd || build_etcd
build_helm() {
  # helm's default capabilities (what `helm template` assumes) come from its client-go minor
  local gomod minor
  gomod=$(modfile "$WORK" "helm.sh/helm/v3@$HELM_VERSION")
  minor=$(sed -n 's/^\s*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -1)
  build_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor:-20}"
}
have helm || build_helm
have kwok || build_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
have kwokctl || build_install kwokctl sigs.k8s.io/kwok/cmd/kwokctl "$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"

step "ready in $(( $(date +%s) - start ))s"
echo "$BIN"
