package main

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/portico/portico/config"
)

// watchDebounce is how long the watched files must stay quiet before a
// reload: editors write a file in several steps.
const watchDebounce = 200 * time.Millisecond

// watcher reloads the configuration when its file, or a certificate, key
// or CA file it names, changes ([server] watch_config). It watches their
// directories, not the files: editors that save by writing a new file and
// renaming it over the old one (vim and many others) and Kubernetes
// ConfigMap updates (a symlink swapped in the directory) replace a file,
// which a watch on the file itself would lose. Any event leads, once the
// directory is quiet, to comparing the files' contents with what they were,
// so only real changes reload.
type watcher struct {
	files []string
	fs    *fsnotify.Watcher
	stop  chan struct{}
	done  chan struct{}
}

// watchedFiles are the files cfg (read from path) depends on.
func watchedFiles(path string, cfg *config.Config) []string {
	files := []string{path}
	for _, c := range cfg.TLS.Certificates {
		files = append(files, c.CertFile, c.KeyFile)
	}
	if cfg.TLS.ACME.Enabled && cfg.TLS.ACME.CARoot != "" {
		files = append(files, cfg.TLS.ACME.CARoot)
	}
	for _, p := range cfg.Pools {
		if p.TLSCAFile != "" {
			files = append(files, p.TLSCAFile)
		}
	}
	slices.Sort(files[1:])
	return slices.Compact(files)
}

func startWatcher(files []string, onChange func(), log *slog.Logger) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, f := range files {
		if abs, err := filepath.Abs(f); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if err := fw.Add(d); err != nil {
			_ = fw.Close()
			return nil, err
		}
	}
	w := &watcher{files: files, fs: fw, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(fingerprint(files), onChange, log)
	return w, nil
}

func (w *watcher) run(sum [32]byte, onChange func(), log *slog.Logger) {
	defer close(w.done)
	defer w.fs.Close()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	for {
		select {
		case <-w.stop:
			return
		case _, ok := <-w.fs.Events:
			if !ok {
				return
			}
			quiet.Reset(watchDebounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			log.Warn("watching the configuration", "err", err)
		case <-quiet.C:
			if now := fingerprint(w.files); now != sum {
				sum = now
				onChange()
			}
		}
	}
}

func (w *watcher) close() {
	close(w.stop)
	<-w.done
}

// fingerprint sums the files' contents, or their absence.
func fingerprint(files []string) [32]byte {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f))
		if b, err := os.ReadFile(f); err == nil {
			h.Write([]byte{1})
			h.Write(b)
		}
		h.Write([]byte{0})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// syncWatcher starts, updates or stops the watcher as cfg says. Reloads it
// triggers run on their own goroutines, so that it never waits for one.
func (in *instance) syncWatcher(cfg *config.Config) {
	if !cfg.Server.WatchConfig || in.path == "" {
		in.stopWatcher()
		return
	}
	files := watchedFiles(in.path, cfg)
	if in.watch != nil && slices.Equal(in.watch.files, files) {
		return
	}
	in.stopWatcher()
	w, err := startWatcher(files, func() { in.bg.Go(func() { in.reload("file change") }) }, in.log)
	if err != nil {
		in.log.Error("cannot watch the configuration; reload with SIGHUP or `portico reload`", "file", in.path, "err", err)
		return
	}
	in.watch = w
	in.log.Info("watching the configuration for changes", "files", files)
}

func (in *instance) stopWatcher() {
	if in.watch != nil {
		in.watch.close()
		in.watch = nil
	}
}
