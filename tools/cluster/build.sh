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

# Upstream components (KEDA, prometheus-adapter), versions pinned in upstream-binaries.txt. A stamp file beside
# each binary names the module@version it was built from: a version bump rebuilds it.
module_dir() {
  (cd "${TMPDIR:-/tmp}" && GOFLAGS= GOWORK=off go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}
while read -r module modver pkg name; do
  [[ -z "$module" || "$module" == \#* ]] && continue
  stamp="$bin/.$name.version"
  if [[ -x "$bin/$name" && "$(cat "$stamp" 2>/dev/null)" == "$module@$modver" ]]; then continue; fi
  echo "build.sh: building $name ($module@$modver $pkg)" >&2
  src="$(mktemp -d)"
  # The module cache is read-only and go.mod's replaces apply only to the main module: build in a writable copy.
  cp -r "$(module_dir "$module@$modver")/." "$src" && chmod -R u+w "$src"
  (cd "$src" && GOFLAGS= GOWORK=off go build -mod=readonly -trimpath -ldflags="-s -w" -o "$bin/.$name.tmp" "$pkg")
  rm -rf "$src"
  mv "$bin/.$name.tmp" "$bin/$name"
  echo "$module@$modver" >"$stamp"
done <"$here/upstream-binaries.txt"
echo "build.sh: binaries ready in $((SECONDS - start)) s" >&2

# Upstream files read from their Go modules (the one place their versions are pinned): CRDs (KEDA, prometheus-operator)
# into <cache>/crds, KEDA's manifests into <cache>/manifests as <last directory>-<file>.
copy_upstream() {
  local list="$1" dest="$2" prefix="$3"
  mkdir -p "$dest"
  while read -r module modver dir files; do
    [[ -z "$module" || "$module" == \#* ]] && continue
    moddir="$(module_dir "$module@$modver")"
    [[ -d "$moddir/$dir" ]] || { echo "build.sh: $module@$modver has no $dir" >&2; exit 4; }
    for f in $files; do
      target="$dest/${prefix:+$(basename "$dir")-}$f"
      cmp -s "$moddir/$dir/$f" "$target" || cp "$moddir/$dir/$f" "$target"
    done
  done <"$list"
}
copy_upstream "$here/upstream-crds.txt" "$bin/../crds" ""
copy_upstream "$here/upstream-manifests.txt" "$bin/../manifests" prefixed
echo "$bin"
