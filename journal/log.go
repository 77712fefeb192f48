package journal

import (
	"fmt"
	"log/slog"
	"strings"
)

// badgerLogger forwards badger's warnings and errors to slog and drops
// its informational chatter (every flush and compaction).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (badgerLogger) Infof(string, ...any) {}

func (badgerLogger) Debugf(string, ...any) {}
