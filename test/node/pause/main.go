// Command pause is the end-to-end node's only workload and its sandbox
// image: it waits for SIGTERM or SIGINT and exits 0, or with the argument
// "exit" exits 0 at once (an init container that has done its work).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exit" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
