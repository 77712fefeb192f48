package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/hsmfs/hsmfs/internal/lifecycle"
)

// runDaemon is the re-executed background process: it reads its
// settings from daemonEnv and serves the mount (internal/lifecycle),
// telling the waiting hsmfs mount on the ready pipe.
func runDaemon() int {
	ready := os.NewFile(readyFd, "ready")
	report := func(err error) {
		if err == nil {
			fmt.Fprintln(ready, "ok")
		} else {
			fmt.Fprintln(ready, "error: "+strings.ReplaceAll(err.Error(), "\n", " "))
		}
		ready.Close()
	}
	var a mountArgs
	if err := json.Unmarshal([]byte(os.Getenv(daemonEnv)), &a); err != nil {
		report(fmt.Errorf("bad daemon arguments: %w", err))
		return exitError
	}
	os.Unsetenv(daemonEnv)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	warn := func(msg string) { fmt.Fprintln(ready, "warn: "+strings.ReplaceAll(msg, "\n", " ")) }
	if err := lifecycle.Serve(a.Config, log, report, warn); err != nil {
		log.Error("hsmfs stopped", "err", err)
		return exitError
	}
	return exitOK
}
