//go:build tools

// Package tools names the binary this module builds, so `go mod tidy` keeps its dependencies.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
