//go:build tools

// Package tools records the commands this module builds (see ../kube/tools.go for why).
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
