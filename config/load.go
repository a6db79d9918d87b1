package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	Line int
	Col  int    // set for syntax errors only
	Key  string // e.g. "pools.app.backends[1].weight"; empty for syntax errors
	Msg  string
}

func (p Problem) Error() string {
	switch {
	case p.Key == "" && p.Col > 0:
		return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
	case p.Key == "":
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Key, p.Msg)
}

// Problems is every problem found in one file, in line order.
type Problems []Problem

func (ps Problems) Error() string {
	msgs := make([]string, len(ps))
	for i, p := range ps {
		msgs[i] = p.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads, decodes and validates the file at path. On failure the error is
// a Problems listing everything wrong, or an *os.PathError if unreadable.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse decodes and validates a document; file names it in messages.
func Parse(data []byte, file string) (*Config, error) {
	// A middleware's keys depend on its type: its table is held back as a
	// toml.Primitive and decoded once the type is known.
	var doc struct {
		Config
		Middlewares map[string]toml.Primitive `toml:"middlewares"`
	}
	sum := sha256.Sum256(data)
	cfg := &doc.Config
	cfg.File, cfg.Checksum = file, hex.EncodeToString(sum[:])
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// The TOML parser reports some errors at the end of the input on
			// line 0 (found by FuzzParse); the file's first line is the nearest.
			return nil, Problems{{File: file, Line: max(pe.Position.Line, 1), Col: pe.Position.Col, Msg: "syntax: " + pe.Message}}
		}
		return nil, Problems{decodeProblem(file, err)}
	}

	v := &validator{file: file, keys: locateKeys(string(data))}
	cfg.keys = v.keys
	skip := v.decodeMiddlewares(cfg, &md, doc.Middlewares)
	v.undecoded(withoutMiddlewares(md.Undecoded(), skip))
	applyDefaults(cfg, &md)
	v.config(cfg)
	byLine := func(ps Problems) {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	}
	if len(v.problems) > 0 {
		// Warnings too, so that fixing the errors brings no second round.
		all := append(v.problems, v.warnings...)
		byLine(all)
		return nil, all
	}
	byLine(v.warnings)
	cfg.Warnings = v.warnings
	return cfg, nil
}

func applyDefaults(c *Config, md *toml.MetaData) {
	s := &c.Server
	if !md.IsDefined("server", "http_addr") {
		s.HTTPAddr = DefaultHTTPAddr
	}
	if !md.IsDefined("server", "admin_addr") {
		s.AdminAddr = DefaultAdminAddr
	}
	s.ReadHeaderTimeout.orDefault(DefaultReadHeaderTimeout)
	s.IdleTimeout.orDefault(DefaultIdleTimeout)
	s.ShutdownTimeout.orDefault(DefaultShutdownTimeout)
	s.DrainTimeout.orDefault(DefaultDrainTimeout)
	s.ClientBodyTimeout.orDefault(DefaultClientBodyTimeout)
	s.SendTimeout.orDefault(DefaultSendTimeout)
	if !md.IsDefined("server", "max_header_bytes") {
		s.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if !md.IsDefined("server", "max_header_count") {
		s.MaxHeaderCount = DefaultMaxHeaderCount
	}

	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.Log.AccessLog == "" {
		c.Log.AccessLog = Stdout
	}
	if c.Log.AccessFormat == "" {
		c.Log.AccessFormat = FormatJSON
	}
	applyMiddlewareDefaults(c, md)

	for name, p := range c.Pools {
		if p.Balance == "" {
			p.Balance = RoundRobin
		}
		p.DialTimeout.orDefault(DefaultDialTimeout)
		p.ResponseHeaderTimeout.orDefault(DefaultResponseHeaderTimeout)
		if !md.IsDefined("pools", name, "max_idle_conns_per_backend") {
			p.MaxIdleConnsPerBackend = DefaultMaxIdleConnsPerBackend
		}
		if !md.IsDefined("pools", name, "retries") {
			p.Retries = DefaultRetries
		}
		if !md.IsDefined("pools", name, "max_response_header_bytes") {
			p.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
		}
		p.Resilience.applyDefaults(md, name)
		for _, b := range p.Backends {
			b.Weight = 1
			if b.RawWeight != nil {
				b.Weight = *b.RawWeight
			}
		}
	}
	for _, r := range c.Routes {
		if r.PathPrefix == "" {
			r.PathPrefix = "/"
		}
		if r.Name == "" {
			r.Name = strings.ToLower(r.Host) + r.PathPrefix
		}
	}
	applyTLSDefaults(c, md)
	applyClusterDefaults(c, md)
}

// withoutMiddlewares drops the keys of middlewares whose type could not be
// known: they were never decoded, and "unknown key" would be noise.
func withoutMiddlewares(keys []toml.Key, skip map[string]bool) []toml.Key {
	out := keys[:0]
	for _, k := range keys {
		if len(k) >= 2 && k[0] == "middlewares" && skip[k[1]] {
			continue
		}
		out = append(out, k)
	}
	return out
}

// decodeMsg is how BurntSushi/toml words a value of the wrong type; it gives
// no typed error, so line and key are read from the text.
var decodeMsg = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func decodeProblem(file string, err error) Problem {
	m := decodeMsg.FindStringSubmatch(err.Error())
	if m == nil {
		return Problem{File: file, Line: 1, Msg: err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	return Problem{File: file, Line: line, Key: m[2], Msg: m[3]}
}
