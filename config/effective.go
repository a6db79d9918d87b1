package config

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Settings is a configuration as it takes effect, defaults included, for
// showing and comparing: sections ("listeners", "server", "routes",
// "pools", "backends", "certificates", ...) of named items, each a set of
// keys with their values written as in TOML. The running instance serves
// its Settings on the admin API; `portico validate -diff` compares a
// file's against them. Secrets are never written out, only a hash that
// tells whether they changed.
type Settings map[string]map[string]map[string]string

// Settings returns the configuration's settings. Keys of tables it does not
// know by name (such as ones added after it was written) are listed in a
// section of their own, so nothing is left out of a comparison.
func (c *Config) Settings() Settings {
	s := Settings{}
	add := func(section, item string, kv map[string]string) {
		if s[section] == nil {
			s[section] = map[string]map[string]string{}
		}
		s[section][item] = kv
	}

	listeners := map[string]string{"http": c.Server.HTTPAddr, "https": c.Server.HTTPSAddr, "admin": c.Server.AdminAddr}
	for name, addr := range listeners {
		if addr != "" && addr != Off {
			add("listeners", name, map[string]string{"addr": strconv.Quote(addr)})
		}
	}
	server := flat(c.Server)
	for _, k := range []string{"http_addr", "https_addr", "admin_addr"} {
		delete(server, k)
	}
	add("server", "server", server)
	add("log", "log", flat(c.Log))

	if c.TLS.Enabled() {
		t := flat(c.TLS)
		for k := range t {
			if strings.HasPrefix(k, "certificates") {
				delete(t, k)
			}
		}
		add("tls", "tls", t)
	}
	for _, cert := range c.TLS.Certificates {
		kv := map[string]string{"key_file": strconv.Quote(cert.KeyFile)}
		if l := cert.Loaded; l != nil && l.Leaf != nil {
			sum := sha256.Sum256(l.Leaf.Raw)
			kv["sha256"] = hex.EncodeToString(sum[:8])
			kv["names"] = listText(l.Leaf.DNSNames)
			kv["not_after"] = l.Leaf.NotAfter.UTC().Format(time.RFC3339)
		}
		add("certificates", cert.CertFile, kv)
	}

	for name, p := range c.Pools {
		kv := flat(p)
		for k := range kv {
			if strings.HasPrefix(k, "backends") {
				delete(kv, k)
			}
		}
		add("pools", name, kv)
		for _, b := range p.Backends {
			id := b.URL
			if b.Parsed != nil {
				id = b.Parsed.String()
			}
			add("backends", name+" "+id, map[string]string{"weight": strconv.Itoa(b.Weight)})
		}
	}
	for _, r := range c.Routes {
		kv := flat(r)
		delete(kv, "name")
		add("routes", r.Name, kv)
	}
	for name, m := range c.Middlewares {
		kv := flat(m.Options)
		kv["type"] = strconv.Quote(m.Type)
		add("middlewares", name, kv)
	}

	// Tables not named above, as they come: [section.NAME] items or one
	// [section] item.
	known := map[string]bool{"server": true, "log": true, "tls": true, "pools": true, "routes": true}
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag := tomlKey(f)
		if tag == "" || known[tag] || !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Map {
			for _, k := range fv.MapKeys() {
				add(tag, fmt.Sprint(k.Interface()), flat(fv.MapIndex(k).Interface()))
			}
			continue
		}
		add(tag, tag, flat(fv.Interface()))
	}
	return s
}

// sectionOrder is the order in which changes are shown; other sections follow
// alphabetically.
var sectionOrder = []string{"listeners", "server", "tls", "certificates", "routes", "middlewares", "pools", "backends", "log"}

// Change is one item added, removed or changed between two Settings.
type Change struct {
	Section string      `json:"section"`
	Item    string      `json:"item"`
	Op      string      `json:"op"`   // "+" added, "-" removed, "~" changed
	Keys    []KeyChange `json:"keys"` // an added item's settings, a changed item's changes
}

// KeyChange is one key of a Change. Old is empty for a key that was not
// set, New for a key no longer set.
type KeyChange struct {
	Key string `json:"key"`
	Old string `json:"old,omitempty"`
	New string `json:"new,omitempty"`
}

func (k KeyChange) String() string {
	switch {
	case k.Old == "":
		return k.Key + " = " + k.New
	case k.New == "":
		return k.Key + ": " + k.Old + " -> (unset)"
	}
	return k.Key + ": " + k.Old + " -> " + k.New
}

// Summary is the change on one line, for logs.
func (c Change) Summary() string {
	s := c.Op + " " + c.Section + " " + c.Item
	if c.Op != "~" {
		return s
	}
	parts := make([]string, len(c.Keys))
	for i, k := range c.Keys {
		parts[i] = k.String()
	}
	return s + ": " + strings.Join(parts, ", ")
}

// Diff lists what changes from old to new, by section (in the order
// listeners, server, tls, certificates, routes, middlewares, pools,
// backends, log, then any other), item and key.
func Diff(old, new Settings) []Change {
	sections := map[string]bool{}
	for s := range old {
		sections[s] = true
	}
	for s := range new {
		sections[s] = true
	}
	names := make([]string, 0, len(sections))
	for s := range sections {
		names = append(names, s)
	}
	rank := func(s string) int {
		if i := slices.Index(sectionOrder, s); i >= 0 {
			return i
		}
		return len(sectionOrder)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, rj := rank(names[i]), rank(names[j])
		return ri < rj || ri == rj && names[i] < names[j]
	})

	var out []Change
	for _, sec := range names {
		items := map[string]bool{}
		for it := range old[sec] {
			items[it] = true
		}
		for it := range new[sec] {
			items[it] = true
		}
		for _, it := range sortedKeys(items) {
			before, had := old[sec][it]
			after, has := new[sec][it]
			switch {
			case !had:
				c := Change{Section: sec, Item: it, Op: "+"}
				for _, k := range sortedKeys(after) {
					c.Keys = append(c.Keys, KeyChange{Key: k, New: after[k]})
				}
				out = append(out, c)
			case !has:
				out = append(out, Change{Section: sec, Item: it, Op: "-"})
			default:
				if ks := diffKeys(before, after); len(ks) > 0 {
					out = append(out, Change{Section: sec, Item: it, Op: "~", Keys: ks})
				}
			}
		}
	}
	return out
}

func diffKeys(old, new map[string]string) []KeyChange {
	keys := map[string]bool{}
	for k := range old {
		keys[k] = true
	}
	for k := range new {
		keys[k] = true
	}
	var out []KeyChange
	for _, k := range sortedKeys(keys) {
		if old[k] != new[k] {
			out = append(out, KeyChange{Key: k, Old: old[k], New: new[k]})
		}
	}
	return out
}

// flat writes v's TOML keys, nested ones dotted ("health.interval"), with
// their values.
func flat(v any) map[string]string {
	out := map[string]string{}
	flatten("", reflect.ValueOf(v), false, out)
	return out
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

func flatten(key string, v reflect.Value, secret bool, out map[string]string) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if secret || isSecretKey(key) {
		raw := fmt.Append(nil, v.Interface())
		if v.Kind() == reflect.String { // past a type that prints itself redacted
			raw = []byte(v.String())
		}
		out[key] = `"` + secretText(raw) + `"`
		return
	}
	if v.Kind() == reflect.String {
		// A URL's password, whatever the type: redis_url prints itself
		// without it, but a changed password must still show.
		if raw := v.String(); withoutPassword(raw) != raw {
			out[key] = strconv.Quote(withoutPassword(raw))
			return
		}
	}
	if v.Type().Implements(textMarshaler) {
		b, _ := v.Interface().(encoding.TextMarshaler).MarshalText()
		out[key] = strconv.Quote(string(b))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		n := len(out)
		var plain []string // a value type's own fields, such as a parsed rate
		for i := range v.NumField() {
			f := v.Type().Field(i)
			switch tag := tomlKey(f); {
			case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
				flatten(key, v.Field(i), false, out) // its keys are the table's own
			case f.IsExported() && tag != "":
				flatten(join(key, tag), v.Field(i), f.Tag.Get("secret") == "true", out)
			case f.IsExported():
				plain = append(plain, fmt.Sprintf("%s=%v", f.Name, v.Field(i).Interface()))
			}
		}
		if len(out) == n && len(plain) > 0 {
			out[key] = strings.Join(plain, " ")
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			flatten(join(key, fmt.Sprint(k.Interface())), v.MapIndex(k), secret, out)
		}
	case reflect.Slice, reflect.Array:
		elem := v.Type().Elem()
		for elem.Kind() == reflect.Pointer {
			elem = elem.Elem()
		}
		if elem.Kind() == reflect.Struct || elem.Kind() == reflect.Map {
			for i := range v.Len() {
				flatten(key+"["+strconv.Itoa(i)+"]", v.Index(i), secret, out)
			}
			return
		}
		out[key] = listText(v.Interface())
	case reflect.String:
		out[key] = strconv.Quote(v.String())
	default:
		out[key] = fmt.Sprint(v.Interface())
	}
}

// tomlKey is a field's TOML key, or "" for fields that are not keys.
func tomlKey(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if tag == "-" {
		return ""
	}
	return tag
}

// secretText stands for a secret: a short hash, enough to see that it
// changed.
func secretText(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "(secret, sha256 " + hex.EncodeToString(sum[:4]) + ")"
}

// withoutPassword writes a URL's password (scheme://user:password@host) as
// "xxxxx", followed by its secretText; any other string is left as it is.
func withoutPassword(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	p, ok := u.User.Password()
	if !ok {
		return s
	}
	return u.Redacted() + " " + secretText([]byte(p))
}

// secretWords are what the names of keys holding credentials contain, in
// lower case without "-" and "_".
var secretWords = []string{"password", "passwd", "token", "secret", "apikey", "accesskey", "privatekey", "credential", "authorization", "cookie"}

// isSecretKey recognises keys that hold credentials by their name, so that a
// new one is hidden even if its field lacks the `secret:"true"` tag; header
// values set by name count too, however written (headers.request_set's
// Authorization, X-Api-Key, Private-Token).
func isSecretKey(key string) bool {
	last := strings.ToLower(key[strings.LastIndexAny(key, ".]")+1:])
	last = strings.NewReplacer("-", "", "_", "").Replace(last)
	for _, w := range secretWords {
		if strings.Contains(last, w) {
			return true
		}
	}
	return false
}

// listText writes a list of plain values as TOML does.
func listText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.ReplaceAll(string(b), ",", ", ")
}
