package natsexport

import (
	"errors"
	"fmt"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultConsumer is the name that selects the mount's own .hsm/changes.json
// and .hsm/ctl rather than a named consumer's.
const DefaultConsumer = "default"

// Defaults of Config; docs/fleet.md documents them.
const (
	DefaultSubjectPrefix = "hsmfs"
	DefaultAckTimeout    = 30 * time.Second
	DefaultMaxInflight   = 4096
	DefaultDupWindow     = 2 * time.Minute
	DefaultMaxBytes      = 1 << 30
	connectTimeout       = 5 * time.Second
	// attemptTimeout bounds one publish attempt: a message whose ack has
	// not come by then is published again, with the same id.
	attemptTimeout = 5 * time.Second
)

// StreamLimits are the limits of a stream created with CreateStream.
type StreamLimits struct {
	MaxAge    time.Duration // 0: messages never expire
	MaxBytes  int64         // > 0; when full the stream refuses new messages (discard new)
	DupWindow time.Duration // the duplicate window (Nats-Msg-Id)
	Replicas  int           // 1, or 3 on a three-node cluster
}

// Config is what one exporter needs. Mount must be absolute; New checks
// the rest.
type Config struct {
	URL           string // nats://host:port, comma-separated for a cluster
	CredsFile     string // a .creds file (JWT and seed); empty: none
	Stream        string
	SubjectPrefix string // default DefaultSubjectPrefix
	Mount         string // the mountpoint, absolute
	Consumer      string // "" or DefaultConsumer: the mount's own control files
	Host          string // default os.Hostname()
	CreateStream  bool
	Limits        StreamLimits // used only to create the stream
	AckTimeout    time.Duration
	MaxInflight   int
}

// withDefaults fills in the defaults and checks what can be checked
// without the server or the mount.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("no server URL")
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") {
		return c, fmt.Errorf("bad stream name %q: no spaces, dots, wildcards or slashes", c.Stream)
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if err := CheckSubjectPrefix(c.SubjectPrefix); err != nil {
		return c, err
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if err := CheckConsumerName(c.Consumer); err != nil {
		return c, err
	}
	if !filepath.IsAbs(c.Mount) {
		return c, fmt.Errorf("mount %q is not an absolute path", c.Mount)
	}
	c.Mount = filepath.Clean(c.Mount)
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("host name: %w", err)
		}
		c.Host = h
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.Limits.DupWindow <= 0 {
		c.Limits.DupWindow = DefaultDupWindow
	}
	if c.Limits.MaxBytes <= 0 {
		c.Limits.MaxBytes = DefaultMaxBytes
	}
	if c.Limits.Replicas <= 0 {
		c.Limits.Replicas = 1
	}
	return c, nil
}

// CheckConsumerName accepts the names that can be a directory under
// .hsm/consumers/, and "default".
func CheckConsumerName(name string) error {
	if name == "" {
		return fmt.Errorf("bad consumer name %q", name)
	}
	return hsmctl.CheckConsumer(name)
}

// CheckSubjectPrefix accepts a NATS subject without wildcards or empty
// tokens: the exporter appends its own tokens to it.
func CheckSubjectPrefix(p string) error {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("bad subject prefix %q: dot-separated tokens, no spaces or wildcards", p)
		}
	}
	return nil
}

// Subject is where the messages of one mount and consumer go:
// PREFIX.HOST.MOUNT.CONSUMER, each of the last three made a single
// token by Token. The subject is for routing and filtering; the exact
// host, mount and consumer are in every message.
func Subject(prefix, host, mount, consumer string) string {
	return prefix + "." + Token(host) + "." + Token(strings.TrimPrefix(mount, "/")) + "." + Token(consumer)
}

// Token turns s into one subject token: every byte other than ASCII
// letters, digits, '-' and '_' becomes '_' (so "web.example.com" becomes
// "web_example_com" and "srv/data" becomes "srv_data"); an empty s
// becomes "_". Different names can share a token; messages carry the
// exact names.
func Token(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// subjectMatches reports whether the stream subject filter (which may
// hold * and > wildcards) takes subject.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}
