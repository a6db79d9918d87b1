package proxy

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
		trustedPeer  bool
	}{
		{"untrusted peer, no header", "192.0.2.1:5000", nil, "192.0.2.1", false},
		{"untrusted peer spoofing", "192.0.2.1:5000", []string{"10.0.0.1, 203.0.113.9"}, "192.0.2.1", false},
		{"trusted peer, no header", "10.0.0.5:5000", nil, "10.0.0.5", true},
		{"trusted peer", "10.0.0.5:5000", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"right-most untrusted", "10.0.0.5:5000", []string{"198.51.100.1, 203.0.113.9, 10.0.0.7"}, "203.0.113.9", true},
		{"several header lines", "10.0.0.5:5000", []string{"198.51.100.1", "203.0.113.9, 10.0.0.7"}, "203.0.113.9", true},
		{"all trusted", "10.0.0.5:5000", []string{"10.1.1.1, 10.0.0.7"}, "10.1.1.1", true},
		{"garbage stops at the last known hop", "10.0.0.5:5000", []string{"203.0.113.9, junk, 10.0.0.7"}, "10.0.0.7", true},
		{"entries with ports and brackets", "10.0.0.5:5000", []string{"[2001:db8::9]:443, 203.0.113.9:80"}, "203.0.113.9", true},
		{"IPv6 peer", "[2001:db8::1]:443", []string{"2001:db9::5"}, "2001:db9::5", true},
		{"mapped IPv4 peer", "[::ffff:10.0.0.5]:80", []string{" 203.0.113.9 "}, "203.0.113.9", true},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != nil {
			r.Header["X-Forwarded-For"] = tc.xff
		}
		got, tp := clientIP(r, trusted)
		if got.String() != tc.want || tp != tc.trustedPeer {
			t.Errorf("%s: got %v (trusted peer %v), want %s (%v)", tc.name, got, tp, tc.want, tc.trustedPeer)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.5:5000"
	r.Header["X-Forwarded-For"] = []string{"198.51.100.1, 203.0.113.9, 10.0.0.7"}
	if n := testing.AllocsPerRun(100, func() { clientIP(r, trusted) }); n != 0 {
		t.Errorf("clientIP allocates %v times", n)
	}
}
