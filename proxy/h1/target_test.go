package h1

import (
	"net/http"
	"net/url"
	"testing"
)

// The URL of a plain target, parsed without net/url, is the one
// url.ParseRequestURI makes, field for field, and targets it does not take
// for plain get ParseRequestURI's: every byte value, in the path and in
// the query, at the start, middle and end.
func TestParseTargetAsNetURL(t *testing.T) {
	targets := []string{
		"/", "/index.html", "/a/b/c?x=1&y=2", "/?", "/a?", "/a??", "/a?b?", "/a?b?c",
		"//double", "/a:b@c;d=e,f+g$h&i~j", "/%41", "/a%2Fb", "/a b", "/é", "/a#frag", "/a?q#f",
		"*", "http://host/path?q", "/a?x=%zz", "/a?x=y z",
	}
	for c := range 256 {
		for _, f := range []string{"/%c", "/a%cb", "/a%c", "/a?%c", "/a?x%cy", "/a?x%c", "/%c?q"} {
			targets = append(targets, sprintfByte(f, byte(c)))
		}
	}
	plain := 0
	for _, target := range targets {
		var u url.URL
		got, err := parseTarget(http.MethodGet, target, &u)
		want, werr := url.ParseRequestURI(target)
		if (err != nil) != (werr != nil) {
			t.Errorf("%q: error %v, net/url's %v", target, err, werr)
			continue
		}
		if err != nil {
			continue
		}
		if *got != *want {
			t.Errorf("%q: %#v, net/url's %#v", target, *got, *want)
		}
		if got == &u {
			plain++
		}
	}
	if plain < len(targets)/3 {
		t.Errorf("only %d of %d targets were parsed as plain", plain, len(targets))
	}
}

// sprintfByte puts c where %c is in f, whatever the byte.
func sprintfByte(f string, c byte) string {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == '%' && f[i+1] == 'c' {
			return f[:i] + string([]byte{c}) + f[i+2:]
		}
	}
	return f
}
