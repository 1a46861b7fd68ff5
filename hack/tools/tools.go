//go:build tools

// Package tools records the commands this module builds; the build tag keeps it out of every
// build because main packages cannot be imported, while `go mod tidy` still sees the imports.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
