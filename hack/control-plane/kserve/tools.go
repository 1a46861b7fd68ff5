//go:build tools

// Package tools records the command this module builds (see ../kube/tools.go for why).
package tools

import (
	_ "github.com/kserve/kserve/cmd/manager"
)
