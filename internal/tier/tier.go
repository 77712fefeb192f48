package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// ErrNotFound is returned (wrapped) by Open for an object that does not exist.
var ErrNotFound = errors.New("tier: no such object")

// Tier is one archive destination.
type Tier interface {
	// Put stores size bytes read from r as object name, replacing any object of that name.
	// When it returns nil the object is complete and durable: the directory tier has fsynced
	// the file and its directory; S3 has a completed PUT. On error no object of that name
	// is left half-written under that name (a temp may remain: see List).
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Open returns a reader of object name's content and its size. ErrNotFound if absent.
	// An S3 object's reader reads under ctx: keep ctx alive until it is closed.
	Open(ctx context.Context, name string) (io.ReadCloser, int64, error)
	// Remove deletes object name; an absent object is not an error.
	Remove(ctx context.Context, name string) error
	// List calls fn for every object name in the tier (not temporaries), in any order.
	// An error from fn stops the listing and is returned.
	List(ctx context.Context, fn func(name string) error) error
	// String is the tier's URL, without any secret.
	String() string
}

// maxName bounds an object name so that a dir tier's temporary name
// (".tmp-" NAME "-" RANDOM) stays well under the 255 bytes of a file name.
const maxName = 200

// ValidName reports whether name is a valid object name: 1..200 bytes of [A-Za-z0-9._-], not starting with '.'.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > maxName || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkName is the error of an operation on an invalid name. The name is
// quoted: it may hold anything.
func checkName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("invalid object name %q: want 1..%d bytes of [A-Za-z0-9._-], not starting with '.'", name, maxName)
	}
	return nil
}

// checkSize refuses a negative size: both backends need the exact length
// up front (S3 to choose single PUT or multipart, dir to know when the
// copy is complete).
func checkSize(size int64) error {
	if size < 0 {
		return fmt.Errorf("invalid size %d", size)
	}
	return nil
}

// Open parses a tier URL and returns the tier, checking that it is reachable and writable
// (dir: the directory exists, is a directory, and a temp file can be made and removed;
// s3: the bucket exists). URLs:
//
//	dir:///ABSOLUTE/PATH
//	s3://BUCKET[/PREFIX]?endpoint=URL[&region=R][&credentials=FILE][&profile=P]
//
// endpoint is http://host:port or https://host:port (the scheme chooses TLS);
// without endpoint, AWS (s3.amazonaws.com, https). Credentials never come
// from the URL: access keys in its userinfo or query are refused. They come
// from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN) or from the AWS shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials), profile P (default
// $AWS_PROFILE, else "default"). With credentials=FILE, that file alone is
// used: a credentials file named in the configuration is not silently
// overridden by the daemon's environment.
func Open(ctx context.Context, rawURL string) (Tier, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error repeats the URL, which may hold a secret.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("tier: invalid URL (not shown: it may hold a secret): %w", err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("tier %s: credentials must not be in the URL (userinfo): "+
			"use the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or credentials=FILE", redact(u))
	}
	switch u.Scheme {
	case "dir":
		return openDir(u)
	case "s3":
		return openS3(ctx, u)
	case "":
		return nil, fmt.Errorf("tier %s: no scheme: want dir:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]?endpoint=URL", redact(u))
	default:
		return nil, fmt.Errorf("tier %s: unknown scheme %q: want dir or s3", redact(u), u.Scheme)
	}
}

// redact is u for an error message, with userinfo and every query value
// that Open does not know replaced: those are where a secret would be.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k, vs := range q {
			if !s3Params[k] {
				for i := range vs {
					vs[i] = "REDACTED"
				}
			}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

// secretWords are the query parameter names that look like credentials:
// refused with a message that says where credentials belong instead of a
// plain "unknown parameter".
var secretWords = []string{"key", "secret", "token", "password", "credential", "signature", "x-amz-"}

func looksSecret(param string) bool {
	p := strings.ToLower(param)
	for _, w := range secretWords {
		if strings.Contains(p, w) && p != "credentials" {
			return true
		}
	}
	return false
}
