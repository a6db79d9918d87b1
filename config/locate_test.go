package config

import (
	"os"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// checkLines asserts that every path in want is located on its line.
func checkLines(t *testing.T, src string, want map[string]int) *keyLines {
	t.Helper()
	// The locator runs on documents that parsed cleanly; so must its tests.
	if _, err := toml.Decode(src, new(map[string]any)); err != nil {
		t.Fatalf("test document is not valid TOML: %v\n%s", err, src)
	}
	kl := locateKeys(src)
	for path, line := range want {
		got, ok := kl.lines[path]
		if !ok {
			t.Errorf("path %q not located", path)
			continue
		}
		if got != line {
			t.Errorf("path %q on line %d, want %d", path, got, line)
		}
	}
	if t.Failed() {
		t.Logf("located: %v\ndocument:\n%s", kl.lines, src)
	}
	return kl
}

// checkExact asserts that the located paths are exactly want.
func checkExact(t *testing.T, src string, want map[string]int) {
	t.Helper()
	kl := checkLines(t, src, want)
	for path := range kl.lines {
		if _, ok := want[path]; !ok {
			t.Errorf("unexpected path %q (line %d)", path, kl.lines[path])
		}
	}
}

func TestLocateDottedKeys(t *testing.T) {
	checkExact(t, doc(
		`a.b.c = 1`,
		`x . y = "z"`,
		`[t]`,
		`u.v = true`,
		`[t.w]`,
		`k = 1`,
	), map[string]int{
		"a": 1, "a.b": 1, "a.b.c": 1,
		"x": 2, "x.y": 2,
		"t": 3, "t.u": 4, "t.u.v": 4,
		"t.w": 5, "t.w.k": 6,
	})
}

func TestLocateQuotedKeys(t *testing.T) {
	checkExact(t, doc(
		`"quoted key" = 1`,
		`'literal key' = 2`,
		`site."example.com" = 3`,
		`"esc\u0041" = 4`,
		`["q t"]`,
		`'k' = 5`,
		`[a."b c".d]`,
		`e = 6`,
	), map[string]int{
		"quoted key":       1,
		"literal key":      2,
		"site":             3,
		"site.example.com": 3,
		"escA":             4,
		"q t":              5,
		"q t.k":            6,
		"a.b c.d":          7,
		"a.b c.d.e":        8,
	})
}

func TestLocateArrayOfTables(t *testing.T) {
	checkExact(t, doc(
		`[[routes]]`,
		`pool = "a"`,
		``,
		`[[routes]]`,
		`pool = "b"`,
		`host = "x"`,
		`# a comment`,
		`[[ routes ]] # spaced`,
		`pool = "c"`,
		`[[pools.app.backends]]`,
		`url = "http://a"`,
		`[[pools.app.backends]]`,
		`url = "http://b"`,
	), map[string]int{
		"routes[0]": 1, "routes[0].pool": 2,
		"routes[1]": 4, "routes[1].pool": 5, "routes[1].host": 6,
		"routes[2]": 8, "routes[2].pool": 9,
		"pools.app.backends[0]": 10, "pools.app.backends[0].url": 11,
		"pools.app.backends[1]": 12, "pools.app.backends[1].url": 13,
	})
}

func TestLocateHeadersNestedInArrayOfTables(t *testing.T) {
	checkExact(t, doc(
		`[[routes]]`,
		`pool = "a"`,
		`[routes.x]`,
		`k = 1`,
		`[[routes]]`,
		`pool = "b"`,
		`[routes.x]`,
		`k = 2`,
		`[[routes.sub]]`,
		`n = 1`,
		`[[routes.sub]]`,
		`n = 2`,
		`[routes.sub.deep]`,
		`m = 3`,
		`[[routes]]`,
		`[[routes.sub]]`,
		`n = 3`,
	), map[string]int{
		"routes[0]": 1, "routes[0].pool": 2, "routes[0].x": 3, "routes[0].x.k": 4,
		"routes[1]": 5, "routes[1].pool": 6, "routes[1].x": 7, "routes[1].x.k": 8,
		"routes[1].sub[0]": 9, "routes[1].sub[0].n": 10,
		"routes[1].sub[1]": 11, "routes[1].sub[1].n": 12,
		"routes[1].sub[1].deep": 13, "routes[1].sub[1].deep.m": 14,
		"routes[2]": 15, "routes[2].sub[0]": 16, "routes[2].sub[0].n": 17,
	})
}

func TestLocateInlineTablesInArraysOverSeveralLines(t *testing.T) {
	checkExact(t, doc(
		`[pools.app]`,
		`backends = [`,
		`  { url = "http://a", weight = 3 }, # first`,
		`  # a comment with "quotes" and ] and }`,
		`  { url = "http://b",`,
		`    weight = 2 },`,
		`  {`,
		`    url = "http://c",`,
		`    tags = { zone = "z1", rack = [1, 2] },`,
		`  },`,
		`]`,
		`nested = [[1, 2], [`,
		`  3,`,
		`]]`,
		`after = 1`,
	), map[string]int{
		"pools.app":                          1,
		"pools.app.backends":                 2,
		"pools.app.backends[0]":              3,
		"pools.app.backends[0].url":          3,
		"pools.app.backends[0].weight":       3,
		"pools.app.backends[1]":              5,
		"pools.app.backends[1].url":          5,
		"pools.app.backends[1].weight":       6,
		"pools.app.backends[2]":              7,
		"pools.app.backends[2].url":          8,
		"pools.app.backends[2].tags":         9,
		"pools.app.backends[2].tags.zone":    9,
		"pools.app.backends[2].tags.rack":    9,
		"pools.app.backends[2].tags.rack[0]": 9,
		"pools.app.backends[2].tags.rack[1]": 9,
		"pools.app.nested":                   12,
		"pools.app.nested[0]":                12,
		"pools.app.nested[0][0]":             12,
		"pools.app.nested[0][1]":             12,
		"pools.app.nested[1]":                12,
		"pools.app.nested[1][0]":             13,
		"pools.app.after":                    15,
	})
}

func TestLocateMultilineStrings(t *testing.T) {
	checkExact(t, doc(
		`a = """`,
		`line with # and = and [x] and {y}`,
		`k = 1`,
		`[not.a.table]`,
		`a quote " and two "" and an escaped \""" inside`,
		`"""`,
		`b = '''`,
		`[[not.an.array]]`,
		`z = "unterminated`,
		`'''`,
		`c = """one line"""`,
		`d = '''two`,
		`lines'''`,
		`e = """ends with quotes"""""`,
		`f = '''ends with quotes'''''`,
		`g = """`,
		`escaped backslash \\"""`,
		`h = """"""`,
		`[t]`,
		`i = 1`,
	), map[string]int{
		"a": 1, "b": 7, "c": 11, "d": 12, "e": 14, "f": 15, "g": 16, "h": 18,
		"t": 19, "t.i": 20,
	})
}

func TestLocateStringsWithSpecialCharacters(t *testing.T) {
	checkExact(t, doc(
		`a = "# not a comment" # a comment = [x]`,
		`b = 'x = [y] {z} # w'`,
		`c = "esc \" = [ { # \\"`,
		`d = ["]", "{", '#', "\"]"]`,
		`e = { f = "}", g = "= [" } # {h = 1}`,
		`"key # = [ {" = 1`,
		`[t] # [u]`,
		`j = 'c:\path\'`,
		`k = 1`,
	), map[string]int{
		"a": 1, "b": 2, "c": 3,
		"d": 4, "d[0]": 4, "d[1]": 4, "d[2]": 4, "d[3]": 4,
		"e": 5, "e.f": 5, "e.g": 5,
		"key # = [ {": 6,
		"t":           7, "t.j": 8, "t.k": 9,
	})
}

func TestLocateKeepsDocumentOrder(t *testing.T) {
	kl := locateKeys(doc(
		`z = 1`,
		`[server]`,
		`b = 2`,
		`a = 3`,
		`[[routes]]`,
		`x = 1`,
		`[[routes]]`,
		`x = 2`,
	))
	want := []string{"z", "server", "server.b", "server.a", "routes[0]", "routes[0].x", "routes[1]", "routes[1].x"}
	if strings.Join(kl.order, " ") != strings.Join(want, " ") {
		t.Errorf("order = %v, want %v", kl.order, want)
	}
}

func TestKeyLinesLineFallsBackToNearestWrittenAncestor(t *testing.T) {
	kl := locateKeys(doc(
		`[server]`,
		`http_addr = ":80"`,
		`[pools.app]`,
		`backends = [`,
		`  { url = "http://a" },`,
		`  { url = "http://b" },`,
		`]`,
		`[[routes]]`,
		`pool = "app"`,
		`[[routes]]`,
		`path_prefix = "/x"`,
	))
	cases := []struct {
		path string
		want int
	}{
		{"server.http_addr", 2},             // written
		{"server.admin_addr", 1},            // default: its table
		{"pools.app.backends[1].url", 6},    // written
		{"pools.app.backends[1].weight", 6}, // default: its element
		{"pools.app.backends[5].weight", 4}, // no such element: the array
		{"pools.app.balance", 3},            // default: its table
		{"routes[1].pool", 10},              // not written: this entry, not the first one
		{"routes[0].pool", 9},               // written
		{"routes[1]", 10},                   // the entry itself
		{"log.level", 0},                    // nothing written above it
		{"routes", 0},                       // the array itself is never a key
		{"", 0},                             // empty path
	}
	for _, c := range cases {
		if got := kl.line(c.path); got != c.want {
			t.Errorf("line(%q) = %d, want %d", c.path, got, c.want)
		}
	}
}

func TestWithoutIndexes(t *testing.T) {
	cases := map[string]string{
		"routes[2].bogus":            "routes.bogus",
		"pools.app.backends[10].url": "pools.app.backends.url",
		"a[0][1].b":                  "a.b",
		"server.trusted_proxies[3]":  "server.trusted_proxies",
		"plain.key":                  "plain.key",
		"":                           "",
		"routes[0].sub[1].deep[2].x": "routes.sub.deep.x",
	}
	for in, want := range cases {
		if got := withoutIndexes(in); got != want {
			t.Errorf("withoutIndexes(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every key the TOML library decodes from the example configuration is
// located, and on a line that spells that key.
func TestLocateFindsEveryKeyOfExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	md, err := toml.Decode(string(data), &v)
	if err != nil {
		t.Fatal(err)
	}
	kl := locateKeys(string(data))
	located := map[string]bool{}
	for _, path := range kl.order {
		located[withoutIndexes(path)] = true
	}
	for _, k := range md.Keys() {
		if !located[k.String()] {
			t.Errorf("key %q not located", k)
		}
	}
	src := strings.Split(string(data), "\n")
	for _, path := range kl.order {
		if strings.HasSuffix(path, "]") {
			continue // an array element, not a key
		}
		n := kl.lines[path]
		last := path[strings.LastIndexByte(path, '.')+1:]
		if n < 1 || n > len(src) || !strings.Contains(src[n-1], last) {
			t.Errorf("path %q located on line %d, which does not spell %q", path, n, last)
		}
	}
}
