package main

import (
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/portico/portico/config"
)

//go:embed quickstart.toml
var quickstartTOML string

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flags("run", "run [-config FILE]", stderr)
	path := fs.String("config", "", "configuration file (default: the embedded quickstart)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	// Registered before anything is served, so that no signal can find
	// Go's default action (SIGHUP would end the process).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	var cfg *config.Config
	var demo []*http.Server
	var err error
	if *path == "" {
		cfg, demo, err = quickstart()
	} else {
		cfg, err = config.Load(*path)
	}
	defer func() {
		for _, s := range demo {
			_ = s.Close()
		}
	}()
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	log, level := newLogger(cfg.Log, stderr)
	in, err := start(cfg, *path, log, level)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	if demo != nil {
		printQuickstart(stdout, in.addrs(), demo)
	}
	sdNotify("READY=1")
	for sig := range sigs {
		if !in.handleSignal(sig) {
			log.Info("signal received", "signal", sig.String())
			break
		}
	}
	// A second SIGINT or SIGTERM during the graceful shutdown cuts it short.
	force := make(chan struct{})
	go func() {
		for sig := range sigs {
			if !in.handleSignal(sig) {
				close(force)
				return
			}
		}
	}()
	if err := in.shutdown(force); err != nil {
		log.Error("portico stopped", "err", err)
		return 1
	}
	return 0
}

// newLogger returns Portico's own log and the level variable that reloads
// set.
func newLogger(lc config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	var l slog.Level
	_ = l.UnmarshalText([]byte(lc.Level)) // validated already
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), level
	}
	return slog.New(slog.NewJSONHandler(w, opts)), level
}

type listenAddrs struct{ http, https, admin string }

// quickstart starts two demo backends on loopback and returns the embedded
// configuration pointed at them.
func quickstart() (*config.Config, []*http.Server, error) {
	var servers []*http.Server
	doc := quickstartTOML
	for i, name := range []string{"demo-1", "demo-2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("quickstart demo backend: %w", err)
		}
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Addr: ln.Addr().String()}
		srv.Handler = demoBackend(name, srv)
		go func() { _ = srv.Serve(ln) }()
		servers = append(servers, srv)
		doc = strings.ReplaceAll(doc, fmt.Sprintf("{{DEMO%d}}", i+1), ln.Addr().String())
	}
	cfg, err := config.Parse([]byte(doc), "quickstart.toml")
	return cfg, servers, err
}

// demoBackend greets whoever calls it. POST /stop stops it, as a crashed
// backend would, to watch Portico route around it.
func demoBackend(name string, srv *http.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/stop" {
			fmt.Fprintf(w, "%s stops\n", name)
			go func() { _ = srv.Close() }()
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Demo-Backend", name)
		fmt.Fprintf(w, "Hello from %s: %s %s (X-Forwarded-For: %s)\n",
			name, r.Method, r.URL.RequestURI(), r.Header.Get("X-Forwarded-For"))
	})
}

func printQuickstart(w io.Writer, a listenAddrs, demo []*http.Server) {
	fmt.Fprintf(w, `
Portico quickstart is running: two demo backends behind one proxy, round robin.

  curl http://%[1]s/           # run it twice: demo-1 and demo-2 take turns
  open http://%[2]s/           # the dashboard: traffic, backends, health
  curl http://%[2]s/metrics    # Prometheus metrics
  curl -X POST http://%[3]s/stop   # stop demo-2 and watch it go down

Write your own configuration from config.example.toml, then:
  portico validate -config portico.toml && portico run -config portico.toml

Ctrl-C stops.

`, a.http, a.admin, demo[len(demo)-1].Addr)
}
