package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/portico/portico/config"
)

// runCLI runs the command line with args and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &out, &errb) }()
	select {
	case code = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("portico %s did not return", strings.Join(args, " "))
	}
	return code, out.String(), errb.String()
}

// writeConfig writes a configuration file in a fresh directory.
func writeConfig(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freeAddr reserves a loopback port and releases it for the test to name.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// get fetches url and returns the body, failing the test on any error.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(body)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestValidateExampleConfigExitsZero(t *testing.T) {
	code, stdout, stderr := runCLI(t, "validate", "-config", "../../config.example.toml")
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	if stdout != "../../config.example.toml: ok\n" {
		t.Errorf("stdout = %q", stdout)
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing", stderr)
	}
}

// brokenConfig has valid listen addresses (http_addr, admin_addr) and four
// independent problems, on lines 4, 6, 8 and 10.
const brokenConfig = `[server]
http_addr = "%s"
admin_addr = "%s"
idle_timeout = "forever"
[pools.app]
backends = [{ url = "ftp://10.0.0.1:8443" }]
[[routes]]
pool = "nope"
[log]
level = "loud"
`

func TestValidateBrokenConfigPrintsEveryProblem(t *testing.T) {
	path := writeConfig(t, "broken.toml", fmt.Sprintf(brokenConfig, "127.0.0.1:8080", "127.0.0.1:9090"))
	code, stdout, stderr := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	want := []string{
		path + `:4: server.idle_timeout: invalid duration "forever": use a number with a unit, such as "2s" or "1m30s"`,
		path + `:6: pools.app.backends[0].url: unsupported scheme "ftp": want http, https or h2c`,
		path + `:8: routes[0].pool: no pool named "nope"`,
		path + `:10: log.level: unknown level "loud": want debug, info, warn or error`,
	}
	got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stderr =\n%s\nwant\n%s", stderr, strings.Join(want, "\n"))
	}
	shape := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:[0-9]+: [a-z_.\[\]0-9]+: .+$`)
	for _, line := range got {
		if !shape.MatchString(line) {
			t.Errorf("line %q is not FILE:LINE: key: message", line)
		}
	}
}

func TestValidateSyntaxErrorPrintsLineAndColumn(t *testing.T) {
	path := writeConfig(t, "syntax.toml", "[server]\nhttp_addr = \":80\"\nadmin_addr = \"127.0.0.1:9090\n")
	code, _, stderr := runCLI(t, "validate", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:3:[0-9]+: syntax: .+\n$`).MatchString(stderr) {
		t.Errorf("stderr = %q, want one FILE:3:COL: syntax: ... line", stderr)
	}
}

func TestValidateMissingFileExitsOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.toml")
	code, _, stderr := runCLI(t, "validate", "-config", path)
	if code != 1 || !strings.Contains(stderr, path) {
		t.Errorf("exit %d, stderr %q; want 1 and the path named", code, stderr)
	}
}

func TestValidateWithoutConfigExitsTwo(t *testing.T) {
	code, stdout, stderr := runCLI(t, "validate")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr, "-config FILE is required") || !strings.Contains(stderr, "-config") {
		t.Errorf("stderr = %q, want the missing -config explained", stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
}

func TestBadArgumentsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"validate", "-nope"},
		{"validate", "-config", "../../config.example.toml", "extra"},
		{"run", "-nope"},
		{"run", "extra"},
		{"-nope"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 2 {
			t.Errorf("portico %s: exit %d, want 2", strings.Join(args, " "), code)
		}
		if !strings.Contains(stderr, "Usage: portico") {
			t.Errorf("portico %s: stderr %q, want usage", strings.Join(args, " "), stderr)
		}
	}
}

func TestVersionPrintsPorticoAndVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, "version")
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr %q", code, stderr)
	}
	if !regexp.MustCompile(`^portico \S+\n$`).MatchString(stdout) {
		t.Errorf("stdout = %q, want \"portico VERSION\\n\"", stdout)
	}

	old := version
	version = "v1.2.3"
	defer func() { version = old }()
	if _, stdout, _ := runCLI(t, "version"); stdout != "portico v1.2.3\n" {
		t.Errorf("with -X main.version=v1.2.3: stdout = %q", stdout)
	}
}

func TestHelpFlagExitsZeroAndDocumentsConfig(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"run", "-h"}, {"validate", "-h"}, {"validate", "-help"}} {
		code, stdout, stderr := runCLI(t, args...)
		name := strings.Join(args, " ")
		if code != 0 {
			t.Errorf("portico %s: exit %d, want 0", name, code)
		}
		if !strings.Contains(stderr, "-config") || !strings.Contains(stderr, "Usage: portico") {
			t.Errorf("portico %s: stderr = %q, want usage documenting -config", name, stderr)
		}
		if stdout != "" {
			t.Errorf("portico %s: stdout = %q, want nothing (nothing may start)", name, stdout)
		}
	}
}

func TestHelpCommandPrintsUsage(t *testing.T) {
	code, stdout, _ := runCLI(t, "help")
	if code != 0 || stdout != usage {
		t.Errorf("exit %d, stdout %q; want 0 and the usage", code, stdout)
	}
}

func TestUnknownCommandExitsTwo(t *testing.T) {
	for _, cmd := range []string{"frobnicate", ""} {
		code, stdout, stderr := runCLI(t, cmd)
		if code != 2 {
			t.Errorf("command %q: exit %d, want 2", cmd, code)
		}
		if !strings.Contains(stderr, fmt.Sprintf("unknown command %q", cmd)) || !strings.Contains(stderr, "Usage:") {
			t.Errorf("command %q: stderr = %q, want the command named and the usage", cmd, stderr)
		}
		if stdout != "" {
			t.Errorf("command %q: stdout = %q, want nothing", cmd, stdout)
		}
	}
}

func TestRunBrokenConfigExitsOneAndBindsNothing(t *testing.T) {
	httpAddr, adminAddr := freeAddr(t), freeAddr(t)
	path := writeConfig(t, "broken.toml", fmt.Sprintf(brokenConfig, httpAddr, adminAddr))
	code, stdout, stderr := runCLI(t, "run", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	for _, want := range []string{
		path + ":4: server.idle_timeout: ",
		path + ":6: pools.app.backends[0].url: ",
		path + ":8: routes[0].pool: ",
		path + ":10: log.level: ",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	for key, addr := range map[string]string{"http_addr": httpAddr, "admin_addr": adminAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s %s is not free after a failed run: %v", key, addr, err)
			continue
		}
		_ = ln.Close()
	}
}

func TestQuickstartConfigValidatesAndDemoBackendsAnswer(t *testing.T) {
	cfg, servers, err := quickstart()
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Close()
		}
	})
	if err != nil {
		t.Fatalf("quickstart: %v", err)
	}
	if len(servers) != 2 {
		t.Fatalf("quickstart started %d servers, want 2", len(servers))
	}
	if cfg.File != "quickstart.toml" {
		t.Errorf("File = %q", cfg.File)
	}
	pool := cfg.Pools["demo"]
	if pool == nil || len(pool.Backends) != 2 {
		t.Fatalf("pools = %v, want demo with two backends", cfg.Pools)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].Pool != "demo" {
		t.Errorf("routes = %+v, want one to demo", cfg.Routes)
	}
	for i, b := range pool.Backends {
		name := fmt.Sprintf("demo-%d", i+1)
		resp, body := get(t, b.Parsed.String()+"/hello?x=1")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
		if got := resp.Header.Get("X-Demo-Backend"); got != name {
			t.Errorf("%s: X-Demo-Backend = %q", name, got)
		}
		if want := "Hello from " + name + ": GET /hello?x=1"; !strings.HasPrefix(body, want) {
			t.Errorf("%s: body = %q, want prefix %q", name, body, want)
		}
	}
}

func TestServeProxiesThenReturnsNilOnCancel(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "test")
		fmt.Fprintf(w, "backend saw %s", r.URL.Path)
	}))
	defer backend.Close()

	cfg, err := config.Parse([]byte(fmt.Sprintf(`
[server]
http_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
shutdown_timeout = "5s"

[pools.app]
backends = [{ url = %q }]

[[routes]]
pool = "app"
`, backend.URL)), "serve.toml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.Log.AccessLog = config.Off // the tests read no access log

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan listenAddrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, discardLogger(), func(a listenAddrs) { ready <- a }) }()

	var addrs listenAddrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("serve returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve never became ready")
	}
	for name, a := range map[string]string{"http": addrs.http, "admin": addrs.admin} {
		if host, port, err := net.SplitHostPort(a); err != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("%s address %q is not a bound loopback address", name, a)
		}
	}

	resp, body := get(t, "http://"+addrs.http+"/some/path")
	if resp.StatusCode != http.StatusOK || body != "backend saw /some/path" || resp.Header.Get("X-Backend") != "test" {
		t.Errorf("proxied response: status %d, body %q, X-Backend %q", resp.StatusCode, body, resp.Header.Get("X-Backend"))
	}
	if resp, body := get(t, "http://"+addrs.admin+"/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("admin /healthz: status %d, body %q", resp.StatusCode, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after its context was cancelled")
	}
	for _, a := range []string{addrs.http, addrs.admin} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			_ = c.Close()
			t.Errorf("%s still accepts connections after serve returned", a)
		}
	}
}

func TestHashCommands(t *testing.T) {
	var out, errOut strings.Builder
	if code := cmdHash("hash-key", strings.NewReader("secret\n"), &out, &errOut); code != 0 ||
		out.String() != "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n" {
		t.Fatalf("hash-key: %d %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := cmdHash("hash-password", strings.NewReader("secret"), &out, &errOut); code != 0 ||
		bcrypt.CompareHashAndPassword([]byte(strings.TrimSpace(out.String())), []byte("secret")) != nil {
		t.Fatalf("hash-password: %d %q %q", code, out.String(), errOut.String())
	}
	if code := cmdHash("hash-key", strings.NewReader(""), &out, &errOut); code != 2 {
		t.Fatalf("empty input: exit %d, want 2", code)
	}
}

// SIGUSR1 reopens the access log file, as logrotate expects after moving
// it (the signal itself reaches handleSignal in TestSignalsAndSystemdNotifications).
func TestSIGUSR1ReopensAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	be := startUpstream(t, "b", answer(0))
	r := startRig(t, strings.Replace(simpleDoc("127.0.0.1:0", "", be), `access_log = "off"`, fmt.Sprintf("access_log = %q", path), 1))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if !r.in.handleSignal(syscall.SIGUSR1) {
		t.Fatal("SIGUSR1 would stop Portico")
	}
	waitUntil(t, "access log reopened", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

// serve runs the proxy until ctx ends, then shuts down gracefully. ready is
// called once every listener is bound.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready func(listenAddrs)) error {
	in, err := start(cfg, "", log, nil)
	if err != nil {
		return err
	}
	ready(in.addrs())
	<-ctx.Done()
	return in.shutdown(nil)
}
