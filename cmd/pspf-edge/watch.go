package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fsnotify/fsnotify"
)

// dirWatcher turns file-system events in a few directories into debounced
// "something changed" signals. It does not say what changed: the supervisor
// re-reads the directory and compares content hashes, which is the only
// reliable way through every save pattern (write in place, write a temporary
// file and rename it, delete and create, and the Kubernetes config-map swap,
// where files are symlinks through a `..data` symlink that is replaced by a
// rename, so that no event ever names the file that changed).
type dirWatcher struct {
	w        *fsnotify.Watcher
	debounce time.Duration
	logger   *slog.Logger
	changed  chan struct{} // capacity 1: a signal pending is enough
}

// newDirWatcher watches dirs (not recursively: their entries, including a
// `..data` symlink being replaced). It starts no goroutines; run does.
func newDirWatcher(debounce time.Duration, logger *slog.Logger, dirs ...string) (*dirWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	added := map[string]bool{}
	for _, d := range dirs {
		if added[d] {
			continue
		}
		added[d] = true
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
	}
	return &dirWatcher{w: w, debounce: debounce, logger: logger, changed: make(chan struct{}, 1)}, nil
}

// Changed receives once the watched directories have been quiet for the
// debounce time after one or more events.
func (d *dirWatcher) Changed() <-chan struct{} { return d.changed }

// run forwards debounced signals until ctx is done, then closes the
// watcher. It returns once it has.
func (d *dirWatcher) run(ctx context.Context) {
	defer d.w.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-d.w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue // touch, chmod: the content is what counts
			}
			d.logger.Debug("watch: event", "event", ev.String())
			timer.Reset(d.debounce)
		case err, ok := <-d.w.Errors:
			if !ok {
				return
			}
			// An overflowed queue loses events: rescan to be safe.
			d.logger.Warn("watch: error; rescanning", "err", err)
			timer.Reset(d.debounce)
		case <-timer.C:
			select {
			case d.changed <- struct{}{}:
			default:
			}
		}
	}
}
