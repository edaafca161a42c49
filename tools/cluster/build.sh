#!/usr/bin/env bash
# Build the local control plane from Go modules into a versioned cache outside the repo.
# A second run is a no-op: each binary is built only when the cache lacks it.
#   tools/cluster/build.sh            -> prints the bin directory on its last line
# Env: ASR_CLUSTER_CACHE (default ~/.cache/asr-platform/cluster), GOFLAGS as usual.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/kubernetes/go.mod")"
bin="${ASR_CLUSTER_CACHE:-$HOME/.cache/asr-platform/cluster}/$version/bin"
mkdir -p "$bin"
command -v go >/dev/null || { echo "build.sh: Go is not installed (need go >= 1.26)" >&2; exit 3; }

# module-dir  package  binary
targets=(
  "kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver"
  "kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager"
  "kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler"
  "kubernetes k8s.io/kubernetes/cmd/kubectl kubectl"
  "kubernetes k8s.io/kubernetes/cmd/kubelet kubelet"
  "kubernetes k8s.io/kubernetes/cmd/kube-proxy kube-proxy"
  "pause asr-platform/tools/cluster/pause pause"
  "etcd go.etcd.io/etcd/server/v3 etcd"
  "kwok sigs.k8s.io/kwok/cmd/kwok kwok"
  "kwok sigs.k8s.io/kwok/cmd/kwokctl kwokctl"
  "helm helm.sh/helm/v4/cmd/helm helm"
)
# A plain `go build` of k8s.io/kubernetes reports version v0.0.0-master: Helm then refuses any chart with a
# kubeVersion constraint. Stamp the release the way Kubernetes' own build (hack/lib/version.sh) does.
minor="${version#v1.}"; minor="${minor%%.*}"
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# The cache holds a binary only if it is there and (Kubernetes ones) reports the pinned release.
cached() {
  local mod="$1" name="$2"
  [[ -x "$bin/$name" ]] || return 1
  [[ "$mod" != kubernetes ]] && return 0
  # grep without -q reads to the end: with -q it exits early, the binary dies of SIGPIPE and pipefail fails the check
  if [[ "$name" == kubectl ]]; then "$bin/$name" version --client 2>/dev/null | grep -F "$version" >/dev/null
  else "$bin/$name" --version 2>/dev/null | grep -F "$version" >/dev/null; fi
}

start=$SECONDS
for t in "${targets[@]}"; do
  read -r mod pkg name <<<"$t"
  if cached "$mod" "$name"; then continue; fi
  echo "build.sh: building $name ($pkg)" >&2
  ldflags="-s -w"
  [[ "$mod" == kubernetes ]] && ldflags+="$k8s_ldflags"
  # -trimpath + stripped: reproducible and ~30 % smaller; build to a temp name so an interrupted
  # build never leaves a half-written binary that the cache check would take as done.
  (cd "$here/$mod" && go build -mod=readonly -trimpath -ldflags="$ldflags" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
done
echo "build.sh: binaries ready in $((SECONDS - start)) s" >&2

# Upstream CRDs (KEDA, prometheus-operator) from their Go modules, versions pinned in upstream-crds.txt.
crds="$bin/../crds"
mkdir -p "$crds"
while read -r module modver dir files; do
  [[ -z "$module" || "$module" == \#* ]] && continue
  moddir="$(cd "${TMPDIR:-/tmp}" && GOFLAGS= GOWORK=off go mod download -json "$module@$modver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$moddir/$dir" ]] || { echo "build.sh: $module@$modver has no $dir" >&2; exit 4; }
  for f in $files; do
    cmp -s "$moddir/$dir/$f" "$crds/$f" || cp "$moddir/$dir/$f" "$crds/$f"
  done
done <"$here/upstream-crds.txt"
echo "$bin"
