//go:build tools

// Package tools records the commands this module builds (see ../kube/tools.go for why).
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
