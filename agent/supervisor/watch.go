package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/pspf/pspf-edge/agent/runner"
)

// dirWatcher turns file-system events in a few directories into debounced
// "something changed" signals. It does not say what changed: the supervisor
// re-reads the directory and compares content hashes, which is the only
// reliable way through every save pattern (write in place, write a temporary
// file and rename it, delete and create, and the Kubernetes config-map swap,
// where files are symlinks through a `..data` symlink that is replaced by a
// rename, so that no event ever names the file that changed).
//
// Events on paths that cannot change a config (a file sink's output, a log
// beside agent.yaml, an editor's swap file) are dropped, and each relevant
// path has its own debounce: writes to one file never delay a change of
// another.
type dirWatcher struct {
	w        *fsnotify.Watcher
	debounce time.Duration
	logger   *slog.Logger
	relevant func(path string) bool
	changed  chan struct{} // capacity 1: a signal pending is enough
}

// newDirWatcher watches dirs (not recursively: their entries, including a
// `..data` symlink being replaced) for events on the paths relevant accepts.
// It starts no goroutines; run does.
func newDirWatcher(debounce time.Duration, logger *slog.Logger, relevant func(path string) bool, dirs ...string) (*dirWatcher, error) {
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
	return &dirWatcher{w: w, debounce: debounce, logger: logger, relevant: relevant, changed: make(chan struct{}, 1)}, nil
}

// Changed receives once a relevant path has been quiet for the debounce
// time after one or more events on it.
func (d *dirWatcher) Changed() <-chan struct{} { return d.changed }

// rescanAll is the key of a watcher error: a lost event may concern any file.
const rescanAll = "\x00rescan"

// run forwards debounced signals until ctx is done, then closes the
// watcher. It returns once it has.
func (d *dirWatcher) run(ctx context.Context) {
	defer d.w.Close()
	due := map[string]time.Time{} // relevant path -> end of its quiet time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// arm sets the timer for the earliest end of a quiet time.
	arm := func() {
		var first time.Time
		for _, t := range due {
			if first.IsZero() || t.Before(first) {
				first = t
			}
		}
		if !first.IsZero() {
			timer.Reset(time.Until(first))
		}
	}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-d.w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod || !d.relevant(ev.Name) {
				continue // touch, chmod, or a file that is no config
			}
			d.logger.Debug("watch: event", "event", ev.String())
			due[ev.Name] = time.Now().Add(d.debounce)
			arm()
		case err, ok := <-d.w.Errors:
			if !ok {
				return
			}
			// An overflowed queue loses events: rescan to be safe.
			d.logger.Warn("watch: error; rescanning", "err", err)
			due[rescanAll] = time.Now().Add(d.debounce)
			arm()
		case <-timer.C:
			now, fire := time.Now(), false
			for p, t := range due {
				if !t.After(now) {
					delete(due, p)
					fire = true
				}
			}
			if fire {
				select {
				case d.changed <- struct{}{}:
				default:
				}
			}
			arm()
		}
	}
}

// configPaths returns what a dirWatcher should act on: the pipeline files
// of pipelines (a directory, or one pipeline file), the agent file (if
// any), and a `..data` entry beside them, the symlink a Kubernetes config
// map swaps to change every file at once.
func configPaths(pipelines string, pipelinesIsDir bool, agentFile string) func(path string) bool {
	pipelines = filepath.Clean(pipelines)
	if agentFile != "" {
		agentFile = filepath.Clean(agentFile)
	}
	return func(path string) bool {
		path = filepath.Clean(path)
		dir, base := filepath.Split(path)
		dir = filepath.Clean(dir)
		switch {
		case base == "..data":
			return true
		case path == agentFile:
			return true
		case pipelinesIsDir:
			return dir == pipelines && runner.IsPipelineFile(base)
		default:
			return path == pipelines
		}
	}
}
