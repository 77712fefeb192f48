package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestACLs: with -o allow_other (and so default_permissions), the kernel
// decides access through the mount by BACKING's POSIX ACLs as ext4 does
// beneath it: a named entry that denies a user keeps that user out even
// where the other bits would let anyone in, and one that allows a user
// lets it in. Checked against BACKING itself, the reference.
func TestACLs(t *testing.T) {
	if _, err := exec.LookPath("setfacl"); err != nil {
		t.Skip("no setfacl")
	}
	m := mount(t, withArgs("-o", "allow_other"))
	writeFile(t, filepath.Join(m.Mnt, "denied"), "secret")
	writeFile(t, filepath.Join(m.Mnt, "allowed"), "shared")
	waitClosed(t, m.Mnt)
	for _, c := range [][]string{
		{"chmod", "0644", "denied"}, {"setfacl", "-m", "u:nobody:---", "denied"},
		{"chmod", "0600", "allowed"}, {"setfacl", "-m", "u:nobody:r", "allowed"},
	} {
		if r := run(t, nil, c[0], append(c[1:len(c)-1], filepath.Join(m.Mnt, c[len(c)-1]))...); r.code != 0 {
			t.Fatalf("%s through the mount: %v", strings.Join(c, " "), r)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, name := range []string{"denied", "allowed"} {
			ref := run(t, nobody, "cat", filepath.Join(m.Backing, name))
			got := run(t, nobody, "cat", filepath.Join(m.Mnt, name))
			if (got.code == 0) != (ref.code == 0) || got.stdout != ref.stdout {
				t.Errorf("%s: nobody: cat %s through the mount: %v; in BACKING: %v", when, name, got, ref)
			}
		}
	}
	check("named entries")
	// A chmod changes the ACL's mask (BACKING's file system does it):
	// the kernel must not answer from the ACL it cached before.
	for _, c := range [][]string{{"chmod", "0600", "allowed"}, {"setfacl", "-m", "u:nobody:r", "denied"}} {
		if r := run(t, nil, c[0], append(c[1:len(c)-1], filepath.Join(m.Mnt, c[len(c)-1]))...); r.code != 0 {
			t.Fatalf("%s through the mount: %v", strings.Join(c, " "), r)
		}
	}
	check("after a chmod and a new entry")
}

// TestACLsOnCreate: what another user makes through the mount gets the
// mode and ACL that ext4 gives the same call beneath it: the caller's
// umask applies in a directory without a default ACL, and beneath a
// default ACL the ACL decides, with no umask (the kernel leaves the umask
// to hsmfs, DONT_MASK). Each case runs in a twin directory of BACKING
// itself, the reference.
func TestACLsOnCreate(t *testing.T) {
	if _, err := exec.LookPath("getfacl"); err != nil {
		t.Skip("no getfacl")
	}
	m := mount(t, withArgs("-o", "allow_other"))
	for _, d := range []string{"plain", "inherit"} {
		for _, root := range []string{m.Mnt, m.Backing} {
			dir := filepath.Join(root, d+"-"+filepath.Base(root))
			if r := run(t, nil, "mkdir", "-m", "0777", dir); r.code != 0 {
				t.Fatal(r)
			}
			acl := []string{"-m", "u:nobody:rwx"}
			if d == "inherit" {
				acl = []string{"-d", "-m", "u:nobody:rwx,g::r-x,o::---"}
			}
			if r := run(t, nil, "setfacl", append(acl, dir)...); r.code != 0 {
				t.Fatal(r)
			}
			script := "umask 027; cd " + dir + " && touch f && mkdir sub && mkfifo p"
			if r := run(t, nobody, "sh", "-c", script); r.code != 0 {
				t.Fatalf("%s: %v", script, r)
			}
		}
		for _, name := range []string{"f", "sub", "p"} {
			mnt := filepath.Join(m.Mnt, d+"-mnt", name)
			ref := filepath.Join(m.Backing, d+"-backing", name)
			got := run(t, nil, "getfacl", "-cp", mnt)
			want := run(t, nil, "getfacl", "-cp", ref)
			if got.code != 0 || got.stdout != want.stdout {
				t.Errorf("%s/%s made through the mount:\n%s\nbeneath it:\n%s", d, name, got.stdout, want.stdout)
			}
		}
	}
}
