package config

import (
	"strconv"
	"strings"
)

// keyLines maps every key path written in a TOML document to the line it is
// written on. BurntSushi/toml keeps key positions private and stops at the
// first decode error, so validation reports locations through this small
// structural scan instead. Paths use the form validation reports them in:
// "pools.app.backends[1].weight", "routes[0].pool".
//
// The scan understands tables, arrays of tables, dotted and quoted keys,
// inline tables, arrays and every string form; it never evaluates values.
// The document has already parsed cleanly when it runs.
type keyLines struct {
	lines map[string]int
	order []string // paths in document order
}

func locateKeys(doc string) *keyLines {
	s := &scanner{src: doc, line: 1, kl: &keyLines{lines: map[string]int{}}, arrays: map[string]int{}}
	s.document()
	return s.kl
}

// line returns the line of path or, failing that, of its nearest written
// ancestor (a default that was never written belongs to its table).
func (k *keyLines) line(path string) int {
	for path != "" {
		if l, ok := k.lines[path]; ok {
			return l
		}
		cut := strings.LastIndexAny(path, ".[")
		if cut < 0 {
			break
		}
		path = path[:cut]
	}
	return 0
}

// withoutIndexes turns "routes[2].bogus" into "routes.bogus", the form in
// which toml.MetaData.Undecoded names keys.
func withoutIndexes(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '[' {
			for i < len(path) && path[i] != ']' {
				i++
			}
			continue
		}
		b.WriteByte(path[i])
	}
	return b.String()
}

type scanner struct {
	src    string
	pos    int
	line   int
	kl     *keyLines
	table  string         // current table path
	arrays map[string]int // array-of-tables path -> last index
}

func (s *scanner) record(path string, line int) {
	if _, ok := s.kl.lines[path]; !ok {
		s.kl.order = append(s.kl.order, path)
	}
	s.kl.lines[path] = line
}

func (s *scanner) peek() byte {
	if s.pos < len(s.src) {
		return s.src[s.pos]
	}
	return 0
}

func (s *scanner) advance() {
	if s.pos < len(s.src) {
		if s.src[s.pos] == '\n' {
			s.line++
		}
		s.pos++
	}
}

// skipSpace skips blanks and comments; with newlines it also skips line ends.
func (s *scanner) skipSpace(newlines bool) {
	for s.pos < len(s.src) {
		switch c := s.src[s.pos]; {
		case c == ' ' || c == '\t' || c == '\r':
			s.advance()
		case c == '\n' && newlines:
			s.advance()
		case c == '#':
			for s.pos < len(s.src) && s.src[s.pos] != '\n' {
				s.advance()
			}
		default:
			return
		}
	}
}

func (s *scanner) document() {
	for {
		s.skipSpace(true)
		if s.pos >= len(s.src) {
			return
		}
		if s.peek() == '[' {
			s.header()
			continue
		}
		s.keyValue(s.table)
	}
}

func (s *scanner) header() {
	line := s.line
	s.advance()
	array := s.peek() == '['
	if array {
		s.advance()
	}
	parts := s.key()
	for s.pos < len(s.src) && s.peek() != '\n' {
		if s.peek() == '#' {
			break
		}
		s.advance() // closing brackets
	}
	// A header inside an array of tables refers to its last element.
	path := ""
	for i, p := range parts {
		path = join(path, p)
		if idx, ok := s.arrays[path]; ok && (i < len(parts)-1 || !array) {
			path += "[" + strconv.Itoa(idx) + "]"
		}
	}
	if array {
		idx := 0
		if last, ok := s.arrays[path]; ok {
			idx = last + 1
		}
		s.arrays[path] = idx
		path += "[" + strconv.Itoa(idx) + "]"
	}
	s.table = path
	s.record(path, line)
}

// key reads a dotted key up to (not including) '=' or ']'.
func (s *scanner) key() []string {
	var parts []string
	for {
		s.skipSpace(false)
		switch c := s.peek(); c {
		case '"', '\'':
			start := s.pos
			s.str()
			raw := s.src[start:s.pos]
			if v, err := strconv.Unquote(raw); err == nil && c == '"' {
				parts = append(parts, v)
			} else {
				parts = append(parts, raw[1:len(raw)-1])
			}
		default:
			start := s.pos
			for s.pos < len(s.src) && isBare(s.src[s.pos]) {
				s.advance()
			}
			parts = append(parts, s.src[start:s.pos])
		}
		s.skipSpace(false)
		if s.peek() != '.' {
			return parts
		}
		s.advance()
	}
}

func isBare(c byte) bool {
	return c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func (s *scanner) keyValue(table string) {
	line := s.line
	parts := s.key()
	path := table
	for _, p := range parts {
		path = join(path, p)
		s.record(path, line)
	}
	s.skipSpace(false)
	if s.peek() == '=' {
		s.advance()
	}
	s.skipSpace(false)
	s.value(path)
}

func (s *scanner) value(path string) {
	switch s.peek() {
	case '"', '\'':
		s.str()
	case '[':
		s.advance()
		for i := 0; ; i++ {
			s.skipSpace(true)
			if s.peek() == ']' || s.pos >= len(s.src) {
				s.advance()
				return
			}
			elem := path + "[" + strconv.Itoa(i) + "]"
			s.record(elem, s.line)
			s.value(elem)
			s.skipSpace(true)
			if s.peek() == ',' {
				s.advance()
			}
		}
	case '{':
		s.advance()
		for {
			s.skipSpace(true)
			if s.peek() == '}' || s.pos >= len(s.src) {
				s.advance()
				return
			}
			s.keyValue(path)
			s.skipSpace(true)
			if s.peek() == ',' {
				s.advance()
			}
		}
	default: // number, bool, date: up to a delimiter
		for s.pos < len(s.src) {
			switch s.peek() {
			case ',', ']', '}', '\n', '#':
				return
			}
			s.advance()
		}
	}
}

// str skips any of TOML's four string forms.
func (s *scanner) str() {
	q := s.peek()
	if strings.HasPrefix(s.src[s.pos:], string([]byte{q, q, q})) {
		s.pos += 3
		end := strings.Index(s.src[s.pos:], string([]byte{q, q, q}))
		for q == '"' && end > 0 && escaped(s.src[s.pos:], end) {
			next := strings.Index(s.src[s.pos+end+1:], `"""`)
			if next < 0 {
				end = -1
				break
			}
			end += next + 1
		}
		if end < 0 {
			end = len(s.src) - s.pos
		}
		for i := 0; i < end; i++ {
			s.advance()
		}
		s.pos += 3
		for s.peek() == q { // up to two quotes may close a multi-line string
			s.pos++
		}
		return
	}
	s.advance()
	for s.pos < len(s.src) && s.peek() != q && s.peek() != '\n' {
		if q == '"' && s.peek() == '\\' {
			s.advance()
		}
		s.advance()
	}
	s.advance()
}

// escaped reports whether the quote at s[i] is preceded by an odd number of backslashes.
func escaped(s string, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && s[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}
