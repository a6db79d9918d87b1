package proxy

import (
	"net/http"
	"net/netip"
	"strings"
)

// clientIP resolves the address a request comes from, once, for every
// middleware, the access log and metrics: the peer's address or, when the
// peer is one of trusted, the right-most X-Forwarded-For entry that is not
// itself trusted. Entries left of it were written by whoever the client
// is and prove nothing. If every entry is trusted the left-most one is the
// client; an unreadable entry stops the walk at the nearest hop known. It
// allocates nothing.
func clientIP(r *http.Request, trusted []netip.Prefix) (ip netip.Addr, peerTrusted bool) {
	peer, ok := parseHostAddr(r.RemoteAddr, true)
	if !ok || !inPrefixes(peer, trusted) {
		return peer, false
	}
	client := peer
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		for v := xff[i]; v != ""; {
			item := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				item, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			a, ok := parseHostAddr(strings.TrimSpace(item), false)
			if !ok {
				return client, true
			}
			if !inPrefixes(a, trusted) {
				return a, true
			}
			client = a
		}
	}
	return client, true
}

// parseHostAddr reads "1.2.3.4", "1.2.3.4:80", "::1", "[::1]" or
// "[::1]:80", with IPv4-mapped IPv6 addresses as IPv4. The usual form is
// tried first (withPort: an address and port), because a failed parse
// allocates its error.
func parseHostAddr(s string, withPort bool) (netip.Addr, bool) {
	if withPort {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr().Unmap(), true
		}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && !withPort {
		return ap.Addr().Unmap(), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
