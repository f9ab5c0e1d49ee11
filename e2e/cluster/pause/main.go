// The sandbox ("pause") container of the local node's pods: it holds the pod's namespaces and
// does nothing else. It exits on SIGTERM or SIGINT, and reaps children re-parented to it (a
// pod sharing its process namespace makes it PID 1 there), as registry.k8s.io/pause does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
