// The pod sandbox ("pause") process of Thresher's local node: it holds the pod's namespaces
// and sleeps until it is told to stop (SIGTERM or SIGINT). As PID 1 of a pod that shares its
// PID namespace it reaps orphans. Built static (CGO off) by thresher/devcluster/images.py into
// a one-file image; nothing is pulled from a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
