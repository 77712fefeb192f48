package natsexport

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// TestCredentials runs a server in operator (JWT) mode: an account with
// JetStream, and users whose .creds files the exporter reads with --creds.
func TestCredentials(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	// Operator mode needs a system account for JetStream's internals.
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	resolver.Store(apub, ajwt)
	resolver.Store(spub, sjwt)
	ts := startServer(t, func(o *server.Options) {
		o.TrustedKeys = []string{opub}
		o.AccountResolver = resolver
		o.SystemAccount = spub
	})

	// creds writes a .creds file for a new user signed by signer.
	creds := func(name string, signer nkeys.KeyPair, perm func(*jwt.UserClaims)) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		if perm != nil {
			perm(uc)
		}
		ujwt, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		text, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), name+".creds")
		if err := os.WriteFile(p, text, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mount, dir := fakeMount(t, "", 5, "a", "b")
	cfg := testConfig(ts, mount)

	// A user of an account the server does not trust.
	stranger, _ := nkeys.CreateAccount()
	cfg.CredsFile = creds("stranger", stranger, nil)
	refused(t, cfg, dir, "refused the credentials")

	// A user that may use JetStream but not publish under hsmfs.>.
	cfg.CredsFile = creds("denied", akp, func(uc *jwt.UserClaims) { uc.Pub.Deny.Add("hsmfs.>") })
	refused(t, cfg, dir, "Permissions Violation for Publish")

	// A good user: publishes and blesses.
	cfg.CredsFile = creds("good", akp, nil)
	x, err := New(context.Background(), cfg, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if res, err := x.Round(context.Background()); err != nil || !res.Blessed || res.Count != 2 {
		t.Fatalf("round with good credentials: %+v %v", res, err)
	}
	if got := ctlText(t, dir); !strings.HasPrefix(got, "bless 5 by export ") {
		t.Errorf("ctl %q", got)
	}
}
