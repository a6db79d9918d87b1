package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portico/portico/internal/testlog"
)

// runArgsEnv makes the test binary run Portico itself, for tests that
// need a process of their own: signals, systemd's notification socket.
const runArgsEnv = "PORTICO_TEST_RUN_ARGS"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(runArgsEnv); ok {
		os.Exit(run(strings.Fields(args), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// process is Portico running as a child process.
type process struct {
	cmd    *exec.Cmd
	stderr *testlog.Buffer
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{stderr: &testlog.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(self)
	p.cmd.Env = append(append(os.Environ(), runArgsEnv+"="+strings.Join(args, " ")), env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *process) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	waitUntil(t, "log line "+re, func() bool {
		m = rx.FindStringSubmatch(p.stderr.String())
		return m != nil
	})
	return m
}

// notifySocket listens where systemd would, and returns what it receives.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return path, msgs
}

func expectNotify(t *testing.T, msgs <-chan string, want *regexp.Regexp) {
	t.Helper()
	select {
	case m := <-msgs:
		if !want.MatchString(m) {
			t.Errorf("systemd was told %q, want %v", m, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("systemd was not told %v", want)
	}
}

// Run as systemd runs it: READY=1 once listening; SIGHUP reloads
// (RELOADING=1 with the monotonic time, then READY=1) without ending the
// process; SIGUSR1 reopens the access log; SIGTERM stops it gracefully
// (STOPPING=1) and a second SIGTERM ends it at once, cutting the request
// still running.
func TestSignalsAndSystemdNotifications(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	be := startUpstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	})
	other := startUpstream(t, "other", answer(0))
	accessPath := filepath.Join(t.TempDir(), "access.log")
	textLog := func(doc string) string {
		return strings.Replace(doc, "[log]\naccess_log = \"off\"\n", fmt.Sprintf("[log]\nformat = \"text\"\naccess_log = %q\n", accessPath), 1)
	}
	path := writeConfig(t, "portico.toml", textLog(simpleDoc("127.0.0.1:0", "", be)))
	sock, msgs := notifySocket(t)
	p := startProcess(t, []string{"NOTIFY_SOCKET=" + sock}, "run", "-config", path)

	expectNotify(t, msgs, regexp.MustCompile(`^READY=1$`))
	addr := p.waitLog(t, `msg=listening listener=http addr=(\S+)`)[1]
	if res, body := getStatus(t, "http://"+addr+"/"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("GET: %d %q", res.StatusCode, body)
	}

	if err := os.WriteFile(path, []byte(textLog(simpleDoc("127.0.0.1:0", "", be, other))), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	expectNotify(t, msgs, regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`))
	expectNotify(t, msgs, regexp.MustCompile(`^READY=1$`))
	p.waitLog(t, `msg="configuration reloaded" file=\S+ trigger=SIGHUP changes=1`)
	waitUntil(t, "traffic to the added backend", func() bool {
		getStatus(t, "http://"+addr+"/")
		return other.hits.Load() > 0
	})

	// logrotate moves the access log away and sends SIGUSR1.
	if err := os.Rename(accessPath, accessPath+".1"); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGUSR1)
	waitUntil(t, "access log reopened after SIGUSR1", func() bool {
		_, err := os.Stat(accessPath)
		return err == nil
	})

	slow := make(chan error, 1)
	go func() {
		res, err := http.Get("http://" + addr + "/slow")
		if err == nil {
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		slow <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the backend")
	}

	p.signal(t, syscall.SIGTERM)
	expectNotify(t, msgs, regexp.MustCompile(`^STOPPING=1$`))
	p.waitLog(t, `msg="shutting down"`)
	select {
	case <-p.exited:
		t.Fatalf("exited (%v) with a request in flight", p.err)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.exited:
		var ee *exec.ExitError
		if !errors.As(p.err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("after a second SIGTERM: %v, want exit status 1", p.err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("second SIGTERM took %v to end the process", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second SIGTERM did not end the process")
	}
	if err := <-slow; err == nil {
		t.Error("the request in flight finished; a second SIGTERM should have cut it")
	}
	p.waitLog(t, `msg="second signal: stopping at once"`)
}

// The systemd unit passes systemd-analyze verify and says what the issue
// asks of it.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not found: .ci/run installs Debian's systemd package")
		}
		t.Skip("systemd-analyze not found (Debian package systemd)")
	}
	unit, err := os.ReadFile("../../deploy/portico.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify\n", "ExecReload=/bin/kill -HUP $MAINPID\n", "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
		"User=portico\n", "StateDirectory=portico\n", "ProtectSystem=strict\n", "NoNewPrivileges=yes\n",
		"ExecStart=/usr/local/bin/portico run -config /etc/portico/portico.toml\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// verify checks that the binary exists: this test binary stands in.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "portico.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/portico", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
