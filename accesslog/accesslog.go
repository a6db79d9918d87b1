// Package accesslog owns the access log: one line per request, JSON or
// Apache/nginx "combined", written after the response is complete. A
// request never waits for the disk: its line goes into a bounded buffer that
// one goroutine writes out in batches; when the buffer is full (the disk or
// the pipe cannot keep up) lines are dropped and counted, for the metrics to
// show. Reopen closes and reopens a log file, for logrotate.
package accesslog

import (
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

// BufferSize bounds the lines waiting for the writer: when the disk or the
// pipe cannot keep up and this much is waiting, new lines are dropped (and
// counted). About 2,500 lines of JSON.
const BufferSize = 1 << 20

// FlushDelay is the longest a line waits before it is written: lines are
// written in batches (one system call for many requests), like nginx's
// access_log buffer=... flush=...; a buffer half full is written at once.
const FlushDelay = 100 * time.Millisecond

// Logger is one access log destination.
//
// A request formats its line itself, into a scratch buffer, and appends it
// to the pending bytes under a short lock; one goroutine swaps the pending
// bytes for an empty buffer and writes them. The buffers hold no pointers,
// so the garbage collector never scans them, and the writer is woken once
// per batch, not per line.
type Logger struct {
	format  string
	query   bool
	log     *slog.Logger
	dropped atomic.Uint64

	mu      sync.Mutex
	pending []byte // lines waiting for the writer
	spare   []byte // the writer's, while it writes
	wake    chan struct{}

	path    string // "" when not a file
	reopen  chan chan error
	stop    chan struct{}
	stopped sync.WaitGroup
	closeMu sync.Once

	out  io.Writer // the writer goroutine's
	file *os.File
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
	l.stopped.Go(l.run)
	return l, nil
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// New starts a logger writing to w.
func New(w io.Writer, format string, query bool, log *slog.Logger) *Logger {
	l := newLogger(w, format, query, log)
	l.stopped.Go(l.run)
	return l
}

func newLogger(w io.Writer, format string, query bool, log *slog.Logger) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Logger{
		format: format,
		query:  query,
		log:    log,
		// Full size from the start: appending never reallocates, and
		// 2 MiB of pointer-free memory costs the collector nothing.
		pending: make([]byte, 0, BufferSize),
		spare:   make([]byte, 0, BufferSize),
		wake:    make(chan struct{}, 1),
		reopen:  make(chan chan error),
		stop:    make(chan struct{}),
		out:     w,
	}
}

var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Log formats the line of a finished request and queues it. It never
// blocks on the writer.
func (l *Logger) Log(r *http.Request, info *reqinfo.Info) {
	bp := scratch.Get().(*[]byte)
	line := l.appendLine((*bp)[:0], r, info)
	l.mu.Lock()
	if len(l.pending)+len(line) > BufferSize {
		l.mu.Unlock()
		l.dropped.Add(1)
		*bp = line
		scratch.Put(bp)
		return
	}
	first := len(l.pending) == 0
	l.pending = append(l.pending, line...)
	urgent := len(l.pending) >= BufferSize/2
	l.mu.Unlock()
	*bp = line
	scratch.Put(bp)
	if first || urgent {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func (l *Logger) appendLine(b []byte, r *http.Request, info *reqinfo.Info) []byte {
	f := fields{
		info:   info,
		dur:    time.Since(info.Start),
		method: r.Method,
		host:   r.Host,
		path:   r.URL.EscapedPath(), // as sent; allocates only for paths that need escaping
		proto:  r.Proto,
		ua:     first(r.Header["User-Agent"]),
		ref:    first(r.Header["Referer"]),
	}
	if l.query {
		f.query = r.URL.RawQuery
	}
	if r.TLS != nil {
		f.tls = r.TLS.Version
	}
	if l.format == Combined {
		return appendCombined(b, &f)
	}
	return appendJSON(b, &f)
}

// fields is what a line says about a request besides its record.
type fields struct {
	info                                      *reqinfo.Info
	dur                                       time.Duration
	method, host, path, query, proto, ua, ref string
	tls                                       uint16
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Dropped is how many lines were dropped because the writer fell behind.
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

// Close writes the lines still pending and stops the logger; a file is
// closed. Lines logged after Close are not written.
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
	armed := false
	for {
		select {
		case <-l.wake:
			l.mu.Lock()
			urgent := len(l.pending) >= BufferSize/2
			l.mu.Unlock()
			if urgent {
				l.flush()
			} else if !armed {
				timer.Reset(FlushDelay)
				armed = true
			}
		case <-timer.C:
			armed = false
			l.flush()
		case reply := <-l.reopen:
			reply <- l.reopenFile()
		case <-l.stop:
			l.flush()
			return
		}
	}
}

// flush writes what is pending in one call, while requests go on filling
// the other buffer.
func (l *Logger) flush() {
	l.mu.Lock()
	l.pending, l.spare = l.spare[:0], l.pending
	l.mu.Unlock()
	if len(l.spare) == 0 {
		return
	}
	if _, err := l.out.Write(l.spare); err != nil {
		l.log.Warn("access log write failed", "path", l.path, "err", err)
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
