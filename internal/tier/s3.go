package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// s3Tier keeps objects as the keys PREFIX/NAME of one bucket.
type s3Tier struct {
	c      *minio.Client
	bucket string
	prefix string // "" or "a/b/" (ends with a slash)
	url    string
}

// s3Params are the query parameters of an s3 URL. None holds a secret:
// credentials is a file's path.
var s3Params = map[string]bool{"endpoint": true, "region": true, "credentials": true, "profile": true}

func openS3(ctx context.Context, u *url.URL) (Tier, error) {
	shown := redact(u)
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("tier %s: query: %w", shown, err)
	}
	for k, vs := range q {
		switch {
		case looksSecret(k):
			return nil, fmt.Errorf("tier %s: credentials must not be in the URL (query parameter %q): "+
				"use the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or credentials=FILE", shown, k)
		case !s3Params[k]:
			return nil, fmt.Errorf("tier %s: unknown parameter %q: want endpoint, region, credentials or profile", shown, k)
		case len(vs) != 1:
			return nil, fmt.Errorf("tier %s: parameter %q given %d times", shown, k, len(vs))
		}
	}
	if u.Opaque != "" || u.Fragment != "" {
		return nil, fmt.Errorf("tier %s: want s3://BUCKET[/PREFIX]?endpoint=URL", shown)
	}
	if err := s3utils.CheckValidBucketName(u.Host); err != nil {
		return nil, fmt.Errorf("tier %s: bucket %q: %w", shown, u.Host, err)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return nil, fmt.Errorf("tier %s: prefix %q has an empty, . or .. component", shown, prefix)
			}
		}
		prefix += "/"
	}
	host, secure := "s3.amazonaws.com", true
	if ep := q.Get("endpoint"); ep != "" {
		eu, err := url.Parse(ep)
		if err != nil || eu.Scheme != "http" && eu.Scheme != "https" || eu.Host == "" ||
			eu.User != nil || eu.Path != "" && eu.Path != "/" || eu.RawQuery != "" {
			return nil, fmt.Errorf("tier %s: endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", shown, ep)
		}
		host, secure = eu.Host, eu.Scheme == "https"
	}
	// The canonical URL: known parameters only, in a fixed order.
	canon := (&url.URL{Scheme: "s3", Host: u.Host, Path: "/" + strings.TrimSuffix(prefix, "/")}).String()
	canon = strings.TrimSuffix(canon, "/")
	var sep = "?"
	for _, k := range []string{"endpoint", "region", "credentials", "profile"} {
		if v := q.Get(k); v != "" {
			canon += sep + k + "=" + queryEscape(v)
			sep = "&"
		}
	}
	s := &s3Tier{bucket: u.Host, prefix: prefix, url: canon}

	creds, err := s3Credentials(q.Get("credentials"), q.Get("profile"))
	if err != nil {
		return nil, fmt.Errorf("tier %s: %w", s, err)
	}
	s.c, err = minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: q.Get("region")})
	if err != nil {
		return nil, fmt.Errorf("tier %s: %w", s, err)
	}
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return nil, fmt.Errorf("tier %s: checking bucket %s: %w", s, s.bucket, err)
	}
	if !ok {
		return nil, fmt.Errorf("tier %s: bucket %s does not exist", s, s.bucket)
	}
	return s, nil
}

// s3Credentials is the credentials chain: the environment, then the
// shared credentials file; or, when the URL names a file, that file
// alone. It fails now when it finds nothing, rather than let minio-go go
// on anonymously and fail at the first Put with a bare AccessDenied.
func s3Credentials(file, profile string) (*credentials.Credentials, error) {
	var providers []credentials.Provider
	if file != "" {
		if !filepath.IsAbs(file) {
			return nil, fmt.Errorf("credentials=%s: want an absolute path", file)
		}
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		p := &credentials.FileAWSCredentials{Filename: file, Profile: profile}
		// Retrieved once here for its error (a missing profile), which the
		// chain would swallow.
		if _, err := credentials.New(p).GetWithContext(nil); err != nil {
			return nil, fmt.Errorf("credentials file %s: %w", file, err)
		}
		providers = []credentials.Provider{p}
	} else {
		providers = []credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{Profile: profile},
		}
	}
	creds := credentials.NewChainCredentials(providers)
	v, err := creds.GetWithContext(nil)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" {
		where := "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give credentials=FILE (or fill ~/.aws/credentials)"
		if file != "" {
			where = "file " + file + " has no aws_access_key_id and aws_secret_access_key for the profile"
		}
		return nil, fmt.Errorf("no S3 credentials: %s", where)
	}
	return creds, nil
}

func (s *s3Tier) String() string { return s.url }

// queryEscape escapes a query value, but leaves ':' and '/' (legal in a
// query) as they are, so that endpoint=http://host:port reads as typed.
func queryEscape(v string) string {
	return strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(v))
}

func (s *s3Tier) key(name string) string { return s.prefix + name }

// isNoSuchKey: S3 says NoSuchKey for an absent key; some servers answer
// a plain 404.
func isNoSuchKey(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == minio.NoSuchKey || r.StatusCode == 404 && r.Code != minio.NoSuchBucket
}

func (s *s3Tier) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := errors.Join(checkName(name), checkSize(size)); err != nil {
		return opErr(s, "put", name, err)
	}
	_, err := s.c.PutObject(ctx, s.bucket, s.key(name), &exactReader{r: r, left: size, size: size}, size,
		minio.PutObjectOptions{
			ContentType: "application/octet-stream",
			// Without it minio-go signs the body in aws-chunked
			// encoding on plain http, which some servers store verbatim
			// (gofakes3 does in UploadPart): the object would hold the
			// chunk headers and signatures.
			DisableContentSha256: true,
			// What the signature no longer covers, Content-MD5 does: the
			// server refuses a body (a part) that differs from what was
			// read. It makes minio-go buffer the body (one part, at most
			// 16 MiB) rather than stream it, which also lets it retry.
			SendContentMd5: true,
		})
	if err != nil {
		return opErr(s, "put", name, err)
	}
	return nil
}

// exactReader yields exactly size bytes of r and fails, rather than end,
// if r ends before: minio-go would otherwise send a short body (or, in a
// multipart upload, a short last part) and find out late or not at all.
// It hides r's ReaderAt and Seeker, so that minio-go reads r once, in
// order, as the caller may pass a TeeReader hashing what is read.
type exactReader struct {
	r          io.Reader
	left, size int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case e.left == 0:
		return n, io.EOF
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return n, shortSource(e.size-e.left, e.size)
	case err != nil:
		return n, fmt.Errorf("read source after %d of %d bytes: %w", e.size-e.left, e.size, err)
	}
	return n, nil
}

// Open makes one GET (minio.Core's, which returns the response body and
// the object's size together) rather than minio.Object's lazy GET and
// Stat: the error comes now, and reads are plain reads of the body.
func (s *s3Tier) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	if err := checkName(name); err != nil {
		return nil, 0, opErr(s, "open", name, err)
	}
	body, info, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		if isNoSuchKey(err) {
			return nil, 0, opErr(s, "open", name, fmt.Errorf("%w: %w", ErrNotFound, err))
		}
		return nil, 0, opErr(s, "open", name, err)
	}
	return body, info.Size, nil
}

func (s *s3Tier) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return opErr(s, "remove", name, err)
	}
	err := s.c.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{})
	if err != nil && !isNoSuchKey(err) {
		return opErr(s, "remove", name, err)
	}
	return nil
}

// List lists the keys under the prefix recursively and skips those that
// are not object names (a key of a deeper prefix, another program's).
func (s *s3Tier) List(ctx context.Context, fn func(name string) error) error {
	// Cancelled on return: an fn error stops the listing's requests.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.c.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("tier %s: list: %w", s, obj.Err)
		}
		name := strings.TrimPrefix(obj.Key, s.prefix)
		if !ValidName(name) {
			continue
		}
		if err := fn(name); err != nil {
			return err
		}
	}
	return nil
}
