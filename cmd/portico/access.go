package main

import (
	"os"
	"syscall"
	"time"

	"github.com/portico/portico/accesslog"
	"github.com/portico/portico/config"
)

// accessLog is the access log in force and the settings it was opened with.
type accessLog struct {
	*accesslog.Logger
	dest, format string
	query        bool
}

// nextAccessLog returns the access log cfg asks for: the one in force when
// its settings are the same, a new one otherwise (nil: off). A destination
// that cannot be opened refuses the configuration.
func (in *instance) nextAccessLog(cfg *config.Config) (*accessLog, error) {
	lc := cfg.Log
	if lc.AccessLog == config.Off {
		return nil, nil
	}
	if cur := in.access.Load(); cur != nil && cur.dest == lc.AccessLog && cur.format == lc.AccessFormat && cur.query == lc.AccessLogQuery {
		return cur, nil
	}
	l, err := accesslog.Open(lc.AccessLog, lc.AccessFormat, lc.AccessLogQuery, in.log)
	if err != nil {
		return nil, config.Problems{cfg.Problem("log.access_log", "cannot open: %v", err)}
	}
	return &accessLog{Logger: l, dest: lc.AccessLog, format: lc.AccessFormat, query: lc.AccessLogQuery}, nil
}

// swapAccessLog puts next in force. The one it replaces still gets the
// lines of requests running on the old configuration; it closes when
// drain has passed, or at shutdown.
func (in *instance) swapAccessLog(next *accessLog, drain time.Duration) {
	prev := in.access.Swap(next)
	if prev == nil || prev == next {
		return
	}
	in.bg.Go(func() {
		t := time.NewTimer(drain)
		defer t.Stop()
		select {
		case <-t.C:
		case <-in.ctx.Done():
		}
		_ = prev.Close()
	})
}

// accessDropped is the lines the access log in force dropped, for metrics.
func (in *instance) accessDropped() uint64 {
	if a := in.access.Load(); a != nil {
		return a.Dropped()
	}
	return 0
}

// handleSignal acts on SIGHUP (reload) and SIGUSR1 (reopen the access log
// file, which logrotate asks for after moving it away) and reports whether
// it did; other signals stop Portico.
func (in *instance) handleSignal(sig os.Signal) bool {
	switch sig {
	case syscall.SIGHUP:
		in.reload("SIGHUP")
	case syscall.SIGUSR1:
		if a := in.access.Load(); a != nil {
			in.log.Info("SIGUSR1: reopening the access log")
			_ = a.Reopen() // a failure is logged by the logger, which keeps the old file
		}
	default:
		return false
	}
	return true
}

// discardAccessLog closes an access log opened for a refused configuration.
func (in *instance) discardAccessLog(a *accessLog) {
	if a != nil && a != in.access.Load() {
		_ = a.Close()
	}
}
