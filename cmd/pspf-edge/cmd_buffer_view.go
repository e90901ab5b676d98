package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/buffer"
)

// checkLogDir returns nil if dir is a log directory (it holds segment or
// cursor files), else an error that points to the log directories under it:
// an agent's data directory, its pipelines directory, or one pipeline's.
func checkLogDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("buffer: %s is not a directory", dir)
	}
	for _, pat := range []string{"*.seg", "*.cursor"} {
		if m, _ := filepath.Glob(filepath.Join(dir, pat)); len(m) > 0 {
			return nil
		}
	}
	isDir := func(p string) bool { st, err := os.Stat(p); return err == nil && st.IsDir() }
	logsOf := func(pipelines string) []string {
		var out []string
		ds, _ := filepath.Glob(filepath.Join(pipelines, "*"))
		for _, d := range ds {
			for _, sub := range []string{"log", "dead"} {
				if isDir(filepath.Join(d, sub)) {
					out = append(out, filepath.Join(d, sub))
				}
			}
		}
		return out
	}
	var what string
	var logs []string
	switch {
	case isDir(filepath.Join(dir, "log")):
		what = "one pipeline's directory"
		logs = []string{filepath.Join(dir, "log")}
		if isDir(filepath.Join(dir, "dead")) {
			logs = append(logs, filepath.Join(dir, "dead"))
		}
	case isDir(filepath.Join(dir, "pipelines")):
		what = "an agent's data directory"
		logs = logsOf(filepath.Join(dir, "pipelines"))
	default:
		if logs = logsOf(dir); len(logs) > 0 {
			what = "the pipelines directory of a data directory"
		}
	}
	if what == "" {
		return fmt.Errorf("buffer: %s is not a log directory: it holds no segment (*.seg) or cursor file; a log is DATA_DIR/pipelines/NAME/log (or NAME/dead for the dead letters)", dir)
	}
	if len(logs) == 0 {
		return fmt.Errorf("buffer: %s is %s and holds no pipeline log yet; a log is DATA_DIR/pipelines/NAME/log", dir, what)
	}
	return fmt.Errorf("buffer: %s is %s, not a log directory; its logs (NAME/log) and dead letters (NAME/dead):\n  %s", dir, what, strings.Join(logs, "\n  "))
}

// inspectView is buffer inspect --json: the report in the admin API's
// names (snake_case: first_seq, next_seq, disk_bytes, acked, backlog).
type inspectView struct {
	Dir       string        `json:"dir"`
	Records   uint64        `json:"records"`
	FirstSeq  uint64        `json:"first_seq"`
	NextSeq   uint64        `json:"next_seq"`
	DiskBytes int64         `json:"disk_bytes"`
	Oldest    time.Time     `json:"oldest,omitzero"` // the oldest record's segment, if any record
	Segments  []segmentView `json:"segments"`
	Cursors   []cursorView  `json:"cursors"`
	Missing   []uint64      `json:"missing_segments,omitempty"`
	Damaged   []string      `json:"damaged,omitempty"`
}

type segmentView struct {
	Number   uint64    `json:"number"`
	FirstSeq uint64    `json:"first_seq"`
	Bytes    int64     `json:"bytes"`
	Created  time.Time `json:"created"`
	Flags    uint16    `json:"flags"`
}

type cursorView struct {
	Name    string `json:"name"`
	Acked   uint64 `json:"acked"`
	Backlog uint64 `json:"backlog"` // records after Acked, as a sink's in the status API
}

func newInspectView(rep buffer.Report) inspectView {
	v := inspectView{Dir: rep.Dir, Records: rep.Records, FirstSeq: rep.FirstSeq, NextSeq: rep.NextSeq, DiskBytes: rep.Bytes,
		Missing: rep.Missing, Damaged: rep.Damaged, Segments: []segmentView{}, Cursors: []cursorView{}}
	if rep.Records > 0 {
		v.Oldest = rep.OldestRecord
	}
	for _, s := range rep.Segments {
		v.Segments = append(v.Segments, segmentView{Number: s.Number, FirstSeq: s.First, Bytes: s.Bytes, Created: s.Created, Flags: s.Flags})
	}
	for _, c := range rep.Cursors {
		v.Cursors = append(v.Cursors, cursorView{Name: c.Name, Acked: c.Acked, Backlog: c.Lag})
	}
	return v
}
