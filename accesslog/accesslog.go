// Package accesslog owns the access log: one line per request, JSON or
// Apache/nginx "combined", written after the response is complete. A
// request never waits for it: Log puts the record in a bounded queue that
// one goroutine formats and writes in batches; when the queue is full (the
// disk or the pipe cannot keep up) lines are dropped and counted, for the
// metrics to show. Reopen closes and reopens a log file, for logrotate.
package accesslog

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico/portico/reqinfo"
)

// Formats.
const (
	JSON     = "json"
	Combined = "combined"
)

// QueueSize is how many lines may wait for the writer before new ones are
// dropped: a few seconds of a busy proxy, about 1 MiB.
const QueueSize = 4096

// FlushDelay is the longest a line waits in the writer's buffer: lines are
// written out in batches (one system call for many requests), like nginx's
// access_log buffer=... flush=..., and a full buffer is written at once.
const FlushDelay = 100 * time.Millisecond

// Logger is one access log destination.
type Logger struct {
	queue   chan entry
	dropped atomic.Uint64
	format  string
	query   bool
	log     *slog.Logger

	path    string // "" when not a file
	reopen  chan chan error
	stop    chan struct{}
	stopped sync.WaitGroup
	closeMu sync.Once

	// The writer goroutine's own.
	out  io.Writer
	file *os.File
	buf  *bufio.Writer
	line []byte
}

// entry is what a line needs, copied off the request: strings share the
// request's memory, nothing is formatted on the request's goroutine.
type entry struct {
	info                                      reqinfo.Info
	dur                                       time.Duration
	method, host, path, query, proto, ua, ref string
	tls                                       uint16
}

// Open starts a logger writing to dest: "stdout" or a file path, created
// if missing and appended to. format is JSON or Combined; query says
// whether query strings are logged (they may carry secrets).
func Open(dest, format string, query bool, log *slog.Logger) (*Logger, error) {
	if dest == "stdout" {
		return New(os.Stdout, format, query, log), nil
	}
	f, err := openFile(dest)
	if err != nil {
		return nil, err
	}
	l := newLogger(f, format, query, log)
	l.file, l.path = f, dest
	l.start()
	return l, nil
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// New starts a logger writing to w.
func New(w io.Writer, format string, query bool, log *slog.Logger) *Logger {
	l := newLogger(w, format, query, log)
	l.start()
	return l
}

func newLogger(w io.Writer, format string, query bool, log *slog.Logger) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Logger{
		queue:  make(chan entry, QueueSize),
		format: format,
		query:  query,
		log:    log,
		reopen: make(chan chan error),
		stop:   make(chan struct{}),
		out:    w,
		buf:    bufio.NewWriterSize(w, 64<<10),
	}
}

func (l *Logger) start() { l.stopped.Go(l.run) }

// Log queues the line of a finished request. It never blocks.
func (l *Logger) Log(r *http.Request, info *reqinfo.Info) {
	e := entry{
		info:   *info,
		dur:    time.Since(info.Start),
		method: r.Method,
		host:   r.Host,
		path:   r.URL.EscapedPath(), // as sent; allocates only for paths that need escaping
		proto:  r.Proto,
		ua:     first(r.Header["User-Agent"]),
		ref:    first(r.Header["Referer"]),
	}
	if l.query {
		e.query = r.URL.RawQuery
	}
	if r.TLS != nil {
		e.tls = r.TLS.Version
	}
	select {
	case l.queue <- e:
	default:
		l.dropped.Add(1)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Dropped is how many lines were dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Reopen closes the log file and opens the same path again, after
// logrotate moved it away. If the path cannot be opened, the old file is
// kept and the error returned. Other destinations have nothing to reopen.
func (l *Logger) Reopen() error {
	if l.path == "" {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case l.reopen <- reply:
		return <-reply
	case <-l.stop:
		return errors.New("access log closed")
	}
}

// Close writes the lines still queued and stops the logger; a file is
// closed. Lines logged after Close are dropped.
func (l *Logger) Close() error {
	l.closeMu.Do(func() { close(l.stop) })
	l.stopped.Wait()
	if l.file != nil {
		return l.file.Close()
	}
	return nil
}

func (l *Logger) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case e := <-l.queue:
			if l.buf.Buffered() == 0 {
				timer.Reset(FlushDelay)
			}
			l.write(&e)
		case <-timer.C:
			l.flush()
		case reply := <-l.reopen:
			reply <- l.reopenFile()
		case <-l.stop:
			for {
				select {
				case e := <-l.queue:
					l.write(&e)
				default:
					l.flush()
					return
				}
			}
		}
	}
}

func (l *Logger) write(e *entry) {
	if l.format == Combined {
		l.line = appendCombined(l.line[:0], e)
	} else {
		l.line = appendJSON(l.line[:0], e)
	}
	_, _ = l.buf.Write(l.line)
}

func (l *Logger) flush() {
	if err := l.buf.Flush(); err != nil {
		l.log.Warn("access log write failed", "path", l.path, "err", err)
		l.buf.Reset(l.out) // drop what could not be written rather than retry forever
	}
}

func (l *Logger) reopenFile() error {
	l.flush()
	f, err := openFile(l.path)
	if err != nil {
		err = fmt.Errorf("reopening access log: %w (still writing to the old file)", err)
		l.log.Error("access log not reopened", "path", l.path, "err", err)
		return err
	}
	old := l.file
	l.file, l.out = f, f
	l.buf.Reset(f)
	_ = old.Close()
	l.log.Info("access log reopened", "path", l.path)
	return nil
}

func tlsVersion(v uint16) string {
	if v == 0 {
		return ""
	}
	return tls.VersionName(v)
}
