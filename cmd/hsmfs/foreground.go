package main

import (
	"log/slog"
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hsmfs/hsmfs/internal/lifecycle"
)

// runForeground serves in this process (`hsmfs mount -f`), as a systemd
// unit of Type=notify runs it: systemd is told READY=1 once the mount is
// live (so that units ordered after it find it mounted) and STOPPING=1
// when it starts to go down. Without $NOTIFY_SOCKET nothing is sent.
func runForeground(a mountArgs) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	notify := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Warn("systemd notification failed", "state", state, "err", err)
		}
	}
	var once sync.Once
	a.Foreground = true
	a.Stopping = func() { once.Do(func() { notify(daemon.SdNotifyStopping) }) }
	// Warnings reach stderr through the log already.
	return lifecycle.Serve(a.Config, log, func(err error) {
		if err == nil {
			notify(daemon.SdNotifyReady)
		}
	}, func(string) {})
}
