package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
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

	"github.com/portico/portico/accesslog"
	"github.com/portico/portico/admin"
	"github.com/portico/portico/config"
	"github.com/portico/portico/health"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/middleware"
	"github.com/portico/portico/proxy"
	"github.com/portico/portico/tlsmgr"
)

//go:embed quickstart.toml
var quickstartTOML string

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flags("run", "run [-config FILE]", stderr)
	path := fs.String("config", "", "configuration file (default: the embedded quickstart)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var cfg *config.Config
	var demo []*http.Server
	var err error
	if *path == "" {
		cfg, demo, err = quickstart()
	} else {
		cfg, err = config.Load(*path)
	}
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	if err := serve(ctx, cfg, log, func(addrs listenAddrs) {
		if demo != nil {
			printQuickstart(stdout, addrs, demo)
		}
	}); err != nil {
		log.Error("portico stopped", "err", err)
		return 1
	}
	for _, s := range demo {
		_ = s.Close()
	}
	return 0
}

func newLogger(lc config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(lc.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

type listenAddrs struct{ http, https, admin string }

// serve runs the proxy until ctx ends, then shuts down gracefully. started
// is called once every listener is bound. The admin listener, bound last,
// is shut down last: /readyz answers 503 while the others drain.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, started func(listenAddrs)) error {
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning", "problem", w.Error())
	}
	// Without an admin listener nobody can read metrics: none are recorded.
	var m *metrics.Metrics
	opts := []proxy.Option{}
	if cfg.Server.AdminAddr != config.Off {
		m = metrics.New(versionString())
		stopTicker := runTicker(ctx, m)
		defer stopTicker()
		opts = append(opts, proxy.WithMetrics(m), proxy.WithRejections(func(mw, reason string) middleware.Counter {
			return m.Rejections(mw, reason)
		}))
	}
	if cfg.Log.AccessLog != config.Off {
		access, err := accesslog.Open(cfg.Log.AccessLog, cfg.Log.AccessFormat, cfg.Log.AccessLogQuery, log)
		if err != nil {
			return fmt.Errorf("access log: %w", err)
		}
		defer access.Close() // after the listeners: the last requests are logged
		stopReopen := reopenOnSIGUSR1(access, log)
		defer stopReopen()
		opts = append(opts, proxy.WithAccessLog(access))
		if m != nil {
			m.WatchAccessLogDrops(access.Dropped)
		}
	}
	shared, err := startCluster(ctx, &cfg.Cluster, m, log)
	if err != nil {
		return err
	}
	if shared != nil {
		defer shared.Close() // after the snapshot and the listeners
		opts = append(opts, proxy.WithGlobal(shared))
	}
	snap, err := proxy.NewSnapshot(cfg, log, opts...)
	if err != nil {
		return err
	}
	defer snap.Close()
	// Checkers belong to the snapshot whose pools they probe: a reload that
	// replaces the snapshot must stop them and start the new one's.
	checks, err := health.StartAll(snap.Pools(), cfg.Pools, log)
	if err != nil {
		return err
	}
	defer checks.Stop()
	h := proxy.NewHandler(snap)

	var certs *tlsmgr.Manager
	if cfg.TLS.Enabled() {
		var tlsOpts []tlsmgr.Option
		if shared != nil {
			tlsOpts = append(tlsOpts, tlsmgr.WithSharedStore(shared.Store()))
		}
		if certs, err = tlsmgr.New(&cfg.TLS, log, tlsOpts...); err != nil {
			return err
		}
	}

	type listener struct {
		name string
		ln   net.Listener
		srv  *http.Server
	}
	var ls []listener
	defer func() {
		for _, l := range ls {
			_ = l.ln.Close()
		}
	}()
	listen := func(name, addr string, srv *http.Server) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		if name != "admin" {
			ln = m.TrackConns(name, srv, ln)
		}
		ls = append(ls, listener{name, ln, srv})
		return ln, nil
	}
	var addrs listenAddrs

	// HTTPS first: the redirect on the plain listener names its port.
	var httpsPort string
	if certs != nil {
		srv, err := proxy.NewTLSServer(&cfg.Server, h, certs.TLSConfig(), log)
		if err != nil {
			return fmt.Errorf("https listener: %w", err)
		}
		ln, err := listen("https", cfg.Server.HTTPSAddr, srv)
		if err != nil {
			return err
		}
		addrs.https = ln.Addr().String()
		_, httpsPort, _ = net.SplitHostPort(addrs.https)
		ls[len(ls)-1].ln = tls.NewListener(ln, srv.TLSConfig)
	}

	var plain http.Handler = h
	if cfg.Server.RedirectHTTP {
		plain = proxy.Redirect(httpsPort)
	}
	if certs != nil {
		plain = certs.HTTPHandler(plain)
	}
	srv, err := proxy.NewServer(&cfg.Server, plain, log)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	ln, err := listen("http", cfg.Server.HTTPAddr, srv)
	if err != nil {
		return err
	}
	addrs.http = ln.Addr().String()

	var ready admin.Readiness
	var bound []admin.Listener // complete before the admin listener serves
	if cfg.Server.AdminAddr != config.Off {
		o := adminOptions(cfg, h, certs, m, &ready)
		o.Listeners = func() []admin.Listener { return bound }
		srv := &http.Server{Handler: admin.Handler(o), ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration}
		ln, err := listen("admin", cfg.Server.AdminAddr, srv)
		if err != nil {
			return err
		}
		addrs.admin = ln.Addr().String()
	}
	for _, l := range ls {
		bound = append(bound, admin.Listener{Name: l.name, Addr: l.ln.Addr().String()})
	}

	errc := make(chan error, len(ls))
	for _, l := range ls {
		log.Info("listening", "listener", l.name, "addr", l.ln.Addr().String())
		go func() {
			if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", l.name, err)
			}
		}()
	}
	ready.Set(true)
	started(addrs)
	if certs != nil {
		certs.Start(ctx) // after the listeners: ACME challenges arrive on them
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	ready.Set(false)
	log.Info("shutting down", "timeout", cfg.Server.ShutdownTimeout.Duration.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	for _, l := range ls {
		if err := l.srv.Shutdown(sctx); err != nil {
			log.Warn("requests cut off at shutdown timeout", "listener", l.name, "err", err)
			_ = l.srv.Close()
		}
	}
	log.Info("stopped")
	return nil
}

// reopenOnSIGUSR1 reopens the access log file on SIGUSR1, which is what
// logrotate sends after moving it away. A failed reopen is logged by the
// logger, which keeps writing to the old file.
func reopenOnSIGUSR1(access *accesslog.Logger, log *slog.Logger) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-sig:
				log.Info("SIGUSR1: reopening the access log")
				_ = access.Reopen()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		<-finished
	}
}

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
