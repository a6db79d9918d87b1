package config

import (
	"errors"
	"testing"
)

// FuzzParse: whatever the document, Parse neither panics nor fails without
// saying where: every problem, and every warning, names the file and a line.
// Seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := Parse(doc, "fuzz.toml")
		if err == nil {
			checkPlaces(t, cfg.Warnings)
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error %T %q is not a list of problems", err, err)
		}
		checkPlaces(t, ps)
	})
}

func checkPlaces(t *testing.T, ps Problems) {
	t.Helper()
	for _, p := range ps {
		if p.File != "fuzz.toml" || p.Line < 1 || p.Msg == "" {
			t.Errorf("problem without a place or a message: %#v", p)
		}
	}
}
