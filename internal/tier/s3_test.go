package tier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

const testBucket = "hsm-tier"

// fakeS3 is an in-process S3 server (gofakes3 over memory) that records
// how the client sent each upload.
type fakeS3 struct {
	URL     string
	backend *s3mem.Backend

	mu        sync.Mutex
	parts     int      // UploadPart requests
	streaming []string // X-Amz-Content-Sha256 values of aws-chunked bodies
	noMD5     int      // object or part PUTs without Content-MD5
}

// newFakeS3 starts the server with bucket testBucket, and puts test
// credentials in the environment only: no file, so that the env provider
// of the chain is what signs.
func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	f := &fakeS3{backend: s3mem.New()}
	if err := f.backend.CreateBucket(testBucket); err != nil {
		t.Fatal(err)
	}
	faker := gofakes3.New(f.backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	inner := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "" {
			f.mu.Lock()
			if r.URL.Query().Has("partNumber") {
				f.parts++
			}
			if sha := r.Header.Get("X-Amz-Content-Sha256"); strings.HasPrefix(sha, "STREAMING-") {
				f.streaming = append(f.streaming, sha)
			}
			if r.URL.Path != "/"+testBucket && r.Header.Get("Content-Md5") == "" {
				f.noMD5++
			}
			f.mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	isolateCredentials(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAHSMFSTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "hsmfs-test-secret")
	t.Setenv("AWS_SESSION_TOKEN", "hsmfs-test-token")
	return f
}

// isolateCredentials hides the machine's own AWS credentials, wherever
// the chain would look for them.
func isolateCredentials(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "no-credentials"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "no-config"))
}

func (f *fakeS3) url(prefix string, extra string) string {
	u := "s3://" + testBucket + prefix + "?endpoint=" + f.URL
	if extra != "" {
		u += "&" + extra
	}
	return u
}

func (f *fakeS3) open(t *testing.T, url string) Tier {
	t.Helper()
	tr, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	return tr
}

// stored is what the server holds under key, read from its backend, not
// through the tier: the bytes themselves, not a client's view of them.
func (f *fakeS3) stored(key string) ([]byte, error) {
	obj, err := f.backend.GetObject(testBucket, key, nil)
	if err != nil {
		return nil, fmt.Errorf("backend GetObject(%s): %w", key, err)
	}
	defer obj.Contents.Close()
	return io.ReadAll(obj.Contents)
}

func (f *fakeS3) counts() (parts int, streaming []string, noMD5 int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.parts, slices.Clone(f.streaming), f.noMD5
}

// checkedTier checks, after every successful Put, that the server stores
// exactly the bytes that were read, and that a Put above minio-go's part
// size went as a multipart upload. gofakes3 stores an UploadPart's body
// as it comes: were minio-go to send aws-chunked bodies (its default on
// plain http), a 64 MiB object would be stored with the chunk framing.
type checkedTier struct {
	Tier
	t      *testing.T
	f      *fakeS3
	prefix string
}

func (c checkedTier) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	parts0, _, _ := c.f.counts()
	h := sha256.New()
	start := time.Now()
	err := c.Tier.Put(ctx, name, io.TeeReader(r, h), size)
	if err != nil {
		return err
	}
	if size >= 64*mib {
		// The contract's timing of Put includes the checks below.
		d := time.Since(start)
		c.t.Logf("Put(%s, %d MiB) alone: %v (%.0f MiB/s)", name, size/mib, d.Round(time.Millisecond), float64(size)/mib/d.Seconds())
	}
	// t.Errorf, not Fatalf: concurrent Puts call this off the test's goroutine.
	got, serr := c.f.stored(c.prefix + name)
	switch {
	case serr != nil:
		c.t.Errorf("Put(%s) succeeded, but: %v", name, serr)
	case int64(len(got)) != size:
		c.t.Errorf("Put(%s, %d bytes): the server stores %d bytes", name, size, len(got))
	case sum(got) != string(h.Sum(nil)):
		c.t.Errorf("Put(%s, %d bytes): the server stores other bytes", name, size)
	}
	if parts, _, _ := c.f.counts(); size > 16*mib && parts == parts0 {
		c.t.Errorf("Put(%s, %d bytes) was not a multipart upload", name, size)
	}
	return nil
}

func sum(b []byte) string { s := sha256.Sum256(b); return string(s[:]) }

func TestS3Contract(t *testing.T) {
	runContract(t, func(t *testing.T) Tier {
		f := newFakeS3(t)
		t.Cleanup(func() {
			_, streaming, noMD5 := f.counts()
			if len(streaming) > 0 {
				t.Errorf("%d uploads in aws-chunked encoding (%s)", len(streaming), streaming[0])
			}
			if noMD5 > 0 {
				t.Errorf("%d uploads without Content-MD5", noMD5)
			}
		})
		tr := f.open(t, f.url("/archive/hsmfs", "region=us-east-1"))
		return checkedTier{Tier: tr, t: t, f: f, prefix: "archive/hsmfs/"}
	})
}

// TestS3Keys: objects are PREFIX/NAME; List skips what is not an object
// of the tier (other prefixes, deeper keys, names no object can have).
func TestS3Keys(t *testing.T) {
	f := newFakeS3(t)
	tr := f.open(t, f.url("/a/b/", "region=us-east-1"))
	if got, want := tr.String(), "s3://"+testBucket+"/a/b?endpoint="+f.URL+"&region=us-east-1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	put(t, tr, "obj", []byte("content"))
	if got, err := f.stored("a/b/obj"); err != nil || string(got) != "content" {
		t.Errorf("a/b/obj holds %q (%v)", got, err)
	}
	for _, key := range []string{"a/b/deeper/x", "a/bc", "a/other", "obj", "a/b/.hidden", "a/b/x y"} {
		if _, err := f.backend.PutObject(testBucket, key, nil, bytes.NewReader(nil), 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(t, tr); !slices.Equal(got, []string{"obj"}) {
		t.Errorf("List: %q, want [obj]", got)
	}
	// String is a URL that Open takes back.
	again := f.open(t, tr.String())
	if got := readAll(t, again, "obj"); string(got) != "content" {
		t.Errorf("through String(): %q", got)
	}
}

func TestS3CredentialsFile(t *testing.T) {
	f := newFakeS3(t)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
	file := filepath.Join(t.TempDir(), "credentials")
	ini := "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n" +
		"[archive]\naws_access_key_id = AKIAARCHIVE\naws_secret_access_key = s2\n"
	if err := os.WriteFile(file, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, extra := range []string{"credentials=" + file, "credentials=" + file + "&profile=archive"} {
		tr := f.open(t, f.url("", extra))
		put(t, tr, "x", []byte("y"))
	}
	// ~/.aws/credentials, without credentials=.
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "")
	home := os.Getenv("HOME")
	if err := os.MkdirAll(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	f.open(t, f.url("", "profile=archive"))

	for _, c := range []struct{ extra, want string }{
		{"credentials=" + file + "&profile=nope", "nope"},
		{"credentials=/nonexistent/credentials", "no such file"},
		{"credentials=relative/credentials", "absolute"},
	} {
		if _, err := Open(context.Background(), f.url("", c.extra)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open with %s: %v, want an error saying %q", c.extra, err, c.want)
		}
	}
}

func TestOpenS3Refused(t *testing.T) {
	f := newFakeS3(t)
	const secret = "SUPERSECRETVALUE"
	for _, c := range []struct{ url, want string }{
		{f.url("", "secret="+secret), "credentials must not be in the URL"},
		{f.url("", "access_key=AKIA&secret_key="+secret), "credentials must not be in the URL"},
		{f.url("", "aws_secret_access_key="+secret), "credentials must not be in the URL"},
		{f.url("", "X-Amz-Credential="+secret), "credentials must not be in the URL"},
		{"s3://AKIA:" + secret + "@" + testBucket + "?endpoint=" + f.URL, "credentials must not be in the URL"},
		{"s3://AKIA:" + secret + "%zz@" + testBucket, "invalid URL"},
		{f.url("", "colour=blue"), "unknown parameter"},
		{f.url("", "region=a&region=b"), "2 times"},
		{"s3://no-such-bucket?endpoint=" + f.URL, "does not exist"},
		{"s3://Bad_Bucket?endpoint=" + f.URL, "bucket"},
		{"s3://" + testBucket + "/a/../b?endpoint=" + f.URL, "prefix"},
		{"s3://" + testBucket + "?endpoint=ftp://host", "endpoint"},
		{"s3://" + testBucket + "?endpoint=host:9000", "endpoint"},
		{"s3://" + testBucket + "?endpoint=http://host:9000/path", "endpoint"},
	} {
		tr, err := Open(context.Background(), c.url)
		if err == nil {
			t.Errorf("Open(%s) = %v, want an error", c.url, tr)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%s): %v, want it to say %q", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open(%s): the error shows the secret: %v", c.url, err)
		}
	}

	// No credentials anywhere: refused now, not at the first Put.
	isolateCredentials(t)
	if _, err := Open(context.Background(), f.url("", "")); err == nil || !strings.Contains(err.Error(), "no S3 credentials") {
		t.Errorf("Open without credentials: %v, want no S3 credentials", err)
	}
}
