package lifecycle

import "time"

// Config is what a mount is served with: the settings of hsmfs mount,
// which cmd/hsmfs parses and hands to the daemon it re-executes as JSON.
type Config struct {
	// Version is hsmfs's version, for the metrics.
	Version    string   `json:"version"`
	Backing    string   `json:"backing"`
	Mountpoint string   `json:"mountpoint"`
	Journal    string   `json:"journal"`
	Options    []string `json:"options"`
	Log        string   `json:"log"`
	Debug      bool     `json:"debug"`
	NoPassthru bool     `json:"no_passthrough"`
	FineOnly   bool     `json:"fine_intents"`
	Strict     bool     `json:"strict"`
	// NoOutsideCheck skips the check at mount for changes made while
	// hsmfs did not run (for users who guarantee there are none).
	NoOutsideCheck bool `json:"no_outside_check"`
	// Lag policy of named consumers (checkpoint.Options).
	ConsumerMaxAge  time.Duration `json:"consumer_max_age"`
	ConsumerWarnAge time.Duration `json:"consumer_warn_age"`
	// CacheTimeout is how long the kernel may keep entries, attributes
	// and missing names (fs.Config.CacheTimeout).
	CacheTimeout time.Duration `json:"cache_timeout"`
	// MaxNodes is the node budget (fs.Config.MaxNodes; 0: none;
	// DefaultMaxNodes unless told).
	MaxNodes int `json:"max_nodes"`
	// RestoreTimeout bounds one restore of a released file: a tier that
	// does not answer in time fails the opens waiting for it with EIO.
	RestoreTimeout time.Duration `json:"restore_timeout"`
	// Stopping tells systemd that the foreground daemon goes down
	// (foreground.go); unset in the background daemon.
	Stopping func() `json:"-"`
	Metrics  string `json:"metrics"`
	// Foreground: hsmfs mount -f serves in its own process, logging to
	// stderr.
	Foreground bool `json:"-"`
	// Spawner is the hsmfs mount process that started the daemon: it
	// holds the caller's descriptors until the daemon is ready, and is
	// not one of the processes that the in-place check names.
	Spawner int `json:"spawner"`
}

// InPlace: the mount covers BACKING itself (hsmfs mount DIR DIR).
func (a *Config) InPlace() bool { return a.Backing == a.Mountpoint }

// notifyStopping is called by Serve when it begins to unmount (a signal)
// or finds itself unmounted (umount).
func (a *Config) notifyStopping() {
	if a.Stopping != nil {
		a.Stopping()
	}
}
