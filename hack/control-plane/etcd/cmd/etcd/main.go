// Command etcd is etcd's own entry point (go.etcd.io/etcd/v3's main.go), rebuilt from the pinned
// server module because the upstream main module cannot be built with `go install pkg@version`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
