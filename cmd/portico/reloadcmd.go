package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/config"
)

// adminFlags are the flags that reach a running Portico's admin API.
type adminFlags struct {
	url, token *string
}

func addAdminFlags(fs *flag.FlagSet, defaultURL string) adminFlags {
	return adminFlags{
		url: fs.String("admin", defaultURL, "admin API of the running Portico (its admin_addr)"),
		token: fs.String("token", os.Getenv("PORTICO_ADMIN_TOKEN"),
			"admin token, sent as Authorization: Bearer (default $PORTICO_ADMIN_TOKEN, which, unlike a flag, other users cannot see in ps)"),
	}
}

// call sends a request to the admin API and decodes its JSON answer into v,
// whatever the status, which it returns.
func (a adminFlags) call(method, path string, v any) (int, error) {
	base := strings.TrimSuffix(*a.url, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		return 0, err
	}
	if *a.token != "" {
		req.Header.Set("Authorization", "Bearer "+*a.token)
	}
	res, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the admin API at %s: %w", base, errors.Unwrap(err))
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return res.StatusCode, fmt.Errorf("the admin API at %s refused the request (%s): pass -token or set PORTICO_ADMIN_TOKEN", base, res.Status)
	case http.StatusNotFound:
		return res.StatusCode, fmt.Errorf("%s%s: not found: is this the admin listener of a Portico that reloads?", base, path)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		return res.StatusCode, fmt.Errorf("%s%s answered %s: %v", base, path, res.Status, err)
	}
	return res.StatusCode, nil
}

const defaultAdminURL = "http://" + config.DefaultAdminAddr

func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := flags("reload", "reload [-admin URL] [-token T]", stderr)
	api := addAdminFlags(fs, defaultAdminURL)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	var res admin.ReloadResult
	if _, err := api.call(http.MethodPost, "/api/reload", &res); err != nil {
		fmt.Fprintln(stderr, "portico reload:", err)
		return 1
	}
	if !res.OK {
		fmt.Fprintf(stderr, "portico reload: %s not reloaded; the running configuration stays in force:\n", orQuickstart(res.File))
		for _, e := range res.Errors {
			fmt.Fprintln(stderr, e)
		}
		return 1
	}
	fmt.Fprintf(stdout, "reloaded %s: %s\n", res.File, countChanges(len(res.Changes)))
	printChanges(stdout, res.Changes)
	return 0
}

func orQuickstart(file string) string {
	if file == "" {
		return "the quickstart"
	}
	return file
}

func countChanges(n int) string {
	switch n {
	case 0:
		return "no changes"
	case 1:
		return "1 change"
	}
	return fmt.Sprintf("%d changes", n)
}

// diffRunning prints what a reload to cfg would change in the running
// Portico and returns the exit code of validate -diff: 0 without changes,
// 2 with some, 1 when the running Portico cannot be asked.
func diffRunning(cfg *config.Config, api adminFlags, stdout, stderr io.Writer) int {
	if *api.url == "" {
		*api.url = adminURLOf(cfg)
		if *api.url == "" {
			fmt.Fprintln(stderr, "portico validate: -diff needs -admin URL: the file turns the admin listener off")
			return 1
		}
	}
	var run admin.RunningConfig
	if _, err := api.call(http.MethodGet, "/api/config", &run); err != nil {
		fmt.Fprintln(stderr, "portico validate:", err)
		return 1
	}
	changes := config.Diff(run.Settings, cfg.Settings())
	fmt.Fprintf(stdout, "Compared with the configuration running at %s (%s, sha256 %.12s):\n", *api.url, run.File, run.SHA256)
	printChanges(stdout, changes)
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "no changes: a reload would change nothing")
		return 0
	}
	fmt.Fprintf(stdout, "%s: a reload would apply them\n", countChanges(len(changes)))
	return 2
}

// adminURLOf is the admin API of a Portico running cfg, as reached from
// this machine, or "" when cfg has no admin listener.
func adminURLOf(cfg *config.Config) string {
	addr := cfg.Server.AdminAddr
	if addr == config.Off {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// printChanges prints changes section by section, as a plan: "+" added
// (with its settings), "-" removed, "~" changed (old -> new).
func printChanges(w io.Writer, changes []config.Change) {
	section := ""
	for _, c := range changes {
		if c.Section != section {
			section = c.Section
			fmt.Fprintf(w, "%s:\n", section)
		}
		fmt.Fprintf(w, "  %s %s\n", c.Op, c.Item)
		for _, k := range c.Keys {
			fmt.Fprintf(w, "      %s\n", k)
		}
	}
}
