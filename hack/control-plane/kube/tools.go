//go:build tools

// Package tools records the commands this module builds; the build tag keeps it out of every
// build because main packages cannot be imported, while `go mod tidy` still sees the imports.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
