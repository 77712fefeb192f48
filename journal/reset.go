package journal

import (
	"fmt"
	"os"
	"time"
)

// SetAside is the deliberate way to start over with a journal that is
// damaged (or that belongs to a BACKING that moved): it moves the whole
// directory to DIR.reset-TIMESTAMP, deleting nothing, and returns the new
// name. The next mount creates a fresh journal, which knows nothing of
// earlier changes: the consumer has to copy everything once. It refuses
// while the journal is mounted.
func SetAside(dir string) (string, error) {
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("journal: reset: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	to := dir + ".reset-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(dir, to); err != nil {
		return "", fmt.Errorf("journal: reset: %w", err)
	}
	return to, nil
}
