//go:build tools

// Package tools records the commands this module builds (see ../kube/tools.go for why).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
