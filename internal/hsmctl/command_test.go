package hsmctl

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// Every command parses back from its String, and what ctl is given is
// read as the grammar says.
func TestParseCommand(t *testing.T) {
	for text, want := range map[string]Command{
		"checkpoint":                          {Verb: VerbCheckpoint},
		"checkpoint\n":                        {Verb: VerbCheckpoint},
		"bless":                               {Verb: VerbBless},
		"bless 7\n":                           {Verb: VerbBless, ID: 7},
		"bless 7 full":                        {Verb: VerbBless, ID: 7, Full: true},
		"bless full":                          {Verb: VerbBless, Full: true},
		"bless 7 by sync 1a2b /mirror":        {Verb: VerbBless, ID: 7, By: "sync 1a2b /mirror"},
		"bless 7 full by sync 1a2b /my by x":  {Verb: VerbBless, ID: 7, Full: true, By: "sync 1a2b /my by x"},
		"  bless   9  ":                       {Verb: VerbBless, ID: 9},
		"consumer add backup":                 {Verb: VerbConsumerAdd, Name: "backup"},
		"consumer rm backup\n":                {Verb: VerbConsumerRemove, Name: "backup"},
		"bless 3 by hsmfs bless by root":      {Verb: VerbBless, ID: 3, By: "hsmfs bless by root"},
		"consumer add by":                     {Verb: VerbConsumerAdd, Name: "by"},
		"consumer rm by":                      {Verb: VerbConsumerRemove, Name: "by"},
		"bless 12 full by export S hsmfs.h.m": {Verb: VerbBless, ID: 12, Full: true, By: "export S hsmfs.h.m"},
		"tier add 1 dir:///srv/archive":       {Verb: VerbTierAdd, Tier: 1, URL: "dir:///srv/archive"},
		"tier add 2 s3://b/p?endpoint=http://h:9000&region=r": {Verb: VerbTierAdd, Tier: 2, URL: "s3://b/p?endpoint=http://h:9000&region=r"},
		"tier rm 2\n": {Verb: VerbTierRemove, Tier: 2},
	} {
		got, err := ParseCommand(text)
		if err != nil || got != want {
			t.Errorf("ParseCommand(%q) = %+v, %v; want %+v", text, got, err, want)
			continue
		}
		again, err := ParseCommand(got.String())
		if err != nil || again != got {
			t.Errorf("ParseCommand(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestParseCommandRefuses(t *testing.T) {
	for _, text := range []string{
		"", "\n", "bless\nbless", "frob", "bless 0", "bless -1", "bless x", "bless 7 7",
		"bless 7 fully", "bless full 7", "bless 7 by", "bless 7 by  ", "checkpoint 3", "checkpoint by x",
		"consumer add", "consumer add a b", "consumer list x", "bless 7 by a\x00b",
		"bless 7 by " + strings.Repeat("x", MaxBy+1), "bless 7 by a\tb\x7f",
		"tier", "tier add", "tier add 1", "tier add 0 dir:///x", "tier add x dir:///x", "tier rm", "tier rm 1 2",
		"tier add 1 dir:///x extra", "tier list 1",
	} {
		if c, err := ParseCommand(text); !errors.Is(err, ErrBadCommand) {
			t.Errorf("ParseCommand(%q) = %+v, %v; want ErrBadCommand", text, c, err)
		}
	}
}

func TestCheckConsumer(t *testing.T) {
	for _, ok := range []string{"", "default", "backup", "a.b_c-d"} {
		if err := CheckConsumer(ok); err != nil {
			t.Errorf("consumer %q: %v", ok, err)
		}
	}
	for _, bad := range []string{".", "..", "a/b", "a\x00"} {
		if err := CheckConsumer(bad); !errors.Is(err, ErrBadConsumer) {
			t.Errorf("consumer %q: %v, want ErrBadConsumer", bad, err)
		}
	}
}

// An answer is read header first, then entry by entry; one that is
// short of its count, or longer, is an error, so that it is never
// blessed.
func TestReadAnswer(t *testing.T) {
	good := `{"query":5,"blessed":3,"blessed_by":"sync a /m","count":2,"full":true}` + "\n" +
		`{"path":"a","type":"file"}` + "\n" + `{"path":"?","path_b64":"/w==","type":"gone"}` + "\n"
	a, err := ReadAnswer(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if h := a.Header; h.Query != 5 || h.Blessed != 3 || h.BlessedBy != "sync a /m" || !h.Full || h.Count != 2 {
		t.Errorf("header %+v", h)
	}
	var paths []string
	for {
		e, err := a.NextEntry()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		paths = append(paths, e.Path)
	}
	if strings.Join(paths, ",") != "a,\xff" {
		t.Errorf("paths %q", paths)
	}
	for name, text := range map[string]string{
		"empty":     "",
		"no query":  `{"count":0}` + "\n",
		"short":     `{"query":1,"count":2}` + "\n" + `{"path":"a"}` + "\n",
		"long":      `{"query":1,"count":0}` + "\n" + `{"path":"a"}` + "\n",
		"not json":  `{"query":1,"count":1}` + "\n" + `path a` + "\n",
		"unended":   `{"query":1,"count":1}` + "\n" + `{"path":"a"}`,
		"bad first": "query 1\n",
	} {
		a, err := ReadAnswer(strings.NewReader(text))
		for err == nil {
			var line []byte
			if line, err = a.Next(); line == nil && err == nil {
				break
			}
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// ShortBy gives what "by WHO" takes: valid UTF-8, no control character,
// at most MaxBy bytes, the same for the same input.
func TestShortBy(t *testing.T) {
	long := "sync /" + strings.Repeat("é", 400) + "/end"
	for _, in := range []string{"sync /mirror", "sync /bad\xffname", "sync /new\nline", long} {
		out := ShortBy(in)
		c, err := ParseCommand("bless 3 by " + out)
		if err != nil || c.By != out || !utf8.ValidString(out) || len(out) > MaxBy || ShortBy(in) != out {
			t.Errorf("ShortBy(%q) = %q (%d bytes): %+v, %v", in, out, len(out), c, err)
		}
	}
	if got := ShortBy(long); !strings.HasPrefix(got, "sync /") || !strings.HasSuffix(got, "/end") {
		t.Errorf("ShortBy of a long name lost its head or tail: %q", got)
	}
}

func TestParseHSMCommand(t *testing.T) {
	for text, want := range map[string]HSMCommand{
		"archive":         {Verb: HSMArchive},
		"archive 3":       {Verb: HSMArchive, Tier: 3},
		"release":         {Verb: HSMRelease},
		"restore\n":       {Verb: HSMRestore},
		"remove":          {Verb: HSMRemove},
		"set norelease":   {Verb: HSMSet, Flag: "norelease"},
		"clear noarchive": {Verb: HSMClear, Flag: "noarchive"},
	} {
		got, err := ParseHSMCommand(text)
		if err != nil || got != want {
			t.Errorf("ParseHSMCommand(%q) = %+v, %v; want %+v", text, got, err, want)
		}
		if again, err := ParseHSMCommand(got.String()); err != nil || again != got {
			t.Errorf("ParseHSMCommand(%q) = %+v, %v", got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "archive 0", "archive x", "archive 1 2", "release now", "set", "set dirty", "clear", "frob"} {
		if c, err := ParseHSMCommand(bad); !errors.Is(err, ErrBadCommand) {
			t.Errorf("ParseHSMCommand(%q) = %+v, %v; want ErrBadCommand", bad, c, err)
		}
	}
}
