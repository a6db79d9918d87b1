package accesslog

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Every byte value, at every position of strings up to 17 bytes long and
// among neighbours of each kind, comes out as JSON that reads back as the
// string (invalid UTF-8 as U+FFFD), and printable ASCII comes out as it is.
func TestEscapingByteByByte(t *testing.T) {
	for _, fill := range []byte{'a', ' ', '"', 0x7f, 0xc3, 0x1f} {
		for n := 1; n <= 17; n++ {
			for pos := range n {
				for c := range 256 {
					in := []byte(strings.Repeat(string(fill), n))
					in[pos] = byte(c)
					line := appendString(nil, string(in), "")
					var back string
					if err := json.Unmarshal(line, &back); err != nil {
						t.Fatalf("%q: %s is no JSON string: %v", in, line, err)
					}
					if want := strings.ToValidUTF8(string(in), "\ufffd"); back != want && utf8.ValidString(string(in)) {
						t.Fatalf("%q: %s reads back as %q", in, line, back)
					}
					if plain := plainPrefix(string(in)); plain == len(in) && string(line) != `"`+string(in)+`"` {
						t.Fatalf("%q: written as %s, though it needs no escaping", in, line)
					}
				}
			}
		}
	}
}

func TestMillisAsShortestDecimal(t *testing.T) {
	for _, us := range []int64{0, 1, 9, 10, 100, 999, 1000, 1001, 1010, 1100, 1234, 12345, 999999, 1000000, 86400000000, 1<<40 + 7} { // up to 12 days: float64 stays exact
		want := strconv.AppendFloat(nil, float64(us)/1000, 'f', -1, 64)
		if got := appendMillis(nil, us); string(got) != string(want) {
			t.Errorf("appendMillis(%d) = %s, want %s", us, got, want)
		}
	}
}

// The text kept for a second is not reused for the next one.
func TestLineTimesFollowTheClock(t *testing.T) {
	t0 := time.Date(2026, 12, 31, 23, 59, 59, 999e6, time.UTC)
	for i, tc := range []struct {
		at       time.Time
		iso, clf string
	}{
		{t0, "2026-12-31T23:59:59.999Z", "31/Dec/2026:23:59:59 +0000"},
		{t0.Add(time.Millisecond), "2027-01-01T00:00:00.000Z", "01/Jan/2027:00:00:00 +0000"},
		{t0.Add(2 * time.Millisecond), "2027-01-01T00:00:00.001Z", "01/Jan/2027:00:00:00 +0000"},
		{t0.In(time.FixedZone("x", 3600)), "2026-12-31T23:59:59.999Z", "31/Dec/2026:23:59:59 +0000"},
	} {
		if got := string(appendISOTime(nil, tc.at)); got != tc.iso {
			t.Errorf("%d: ISO %s, want %s", i, got, tc.iso)
		}
		if got := string(appendCLFTime(nil, tc.at)); got != tc.clf {
			t.Errorf("%d: CLF %s, want %s", i, got, tc.clf)
		}
	}
}
