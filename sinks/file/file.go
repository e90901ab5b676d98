// Package file is a sink that appends records as NDJSON to a file, rotating
// it at a size and keeping a number of old files.
package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the file sink's config.
type Config struct {
	Path     string         `yaml:"path" required:"true" doc:"file to append NDJSON lines to; its directory is created"`
	MaxBytes agent.ByteSize `yaml:"max_bytes" min:"1KiB" doc:"rotate when the file would grow past this size"`
	MaxFiles int            `yaml:"max_files" min:"0" max:"1000" doc:"rotated files to keep (path.1 is the newest)"`
	Fsync    string         `yaml:"fsync" enum:"batch,rotate" doc:"batch: fsync before acknowledging each batch (nothing acknowledged is lost); rotate: only on rotation and close (less flash wear, a power cut loses the unsynced tail)"`
}

// Defaults returns the defaults: 64 MiB files, five kept, fsync per batch.
func Defaults() *Config { return &Config{MaxBytes: 64 << 20, MaxFiles: 5, Fsync: "batch"} }

// Factory returns the registry entry of the file sink.
func Factory() agent.Factory[agent.Sink] {
	return agent.Typed[agent.Sink]("appends NDJSON to a file with size-based rotation", Defaults, func(c *Config, env agent.Env) (agent.Sink, error) {
		return New(*c), nil
	})
}

// Sink appends NDJSON records to a file.
type Sink struct {
	cfg  Config
	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte
}

// New returns a file sink; the file is opened by Connect.
func New(cfg Config) *Sink { return &Sink{cfg: cfg} }

// Connect opens (creating) the file for appending.
func (s *Sink) Connect(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		return nil
	}
	return s.open()
}

func (s *Sink) open() error {
	dir := filepath.Dir(s.cfg.Path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	_, statErr := os.Stat(s.cfg.Path)
	f, err := os.OpenFile(s.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("file sink: %w", err)
	}
	if os.IsNotExist(statErr) {
		if err := syncDir(dir); err != nil {
			f.Close()
			return err
		}
	}
	s.f, s.size = f, st.Size()
	return nil
}

// Write appends the batch; with fsync: batch it returns once the data is on disk.
func (s *Sink) Write(_ context.Context, recs []agent.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	b := s.buf[:0]
	for i := range recs {
		start := len(b)
		b = agent.AppendJSON(b, &recs[i])
		b = append(b, '\n')
		if s.size+int64(len(b)) > int64(s.cfg.MaxBytes) && (s.size > 0 || start > 0) {
			// Write what fits, rotate, and go on with this record in the new file.
			if err := s.write(b[:start]); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return err
			}
			b = append(b[:0], b[start:]...)
		}
	}
	s.buf = b
	if err := s.write(b); err != nil {
		return err
	}
	if s.cfg.Fsync == "batch" {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("file sink: fsync: %w", err)
		}
	}
	return nil
}

func (s *Sink) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := s.f.Write(b)
	s.size += int64(n)
	if err != nil {
		return fmt.Errorf("file sink: write: %w", err)
	}
	return nil
}

// rotate seals the current file and shifts path.N to path.N+1, dropping the
// oldest beyond MaxFiles.
func (s *Sink) rotate() error {
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("file sink: fsync before rotation: %w", err)
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("file sink: close before rotation: %w", err)
	}
	s.f = nil
	p := s.cfg.Path
	if s.cfg.MaxFiles == 0 {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("file sink: rotate: %w", err)
		}
	} else {
		os.Remove(p + "." + strconv.Itoa(s.cfg.MaxFiles))
		for i := s.cfg.MaxFiles - 1; i >= 1; i-- {
			old := p + "." + strconv.Itoa(i)
			if _, err := os.Stat(old); err == nil {
				if err := os.Rename(old, p+"."+strconv.Itoa(i+1)); err != nil {
					return fmt.Errorf("file sink: rotate: %w", err)
				}
			}
		}
		if err := os.Rename(p, p+".1"); err != nil {
			return fmt.Errorf("file sink: rotate: %w", err)
		}
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return err
	}
	return s.open()
}

// Flush fsyncs the file.
func (s *Sink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("file sink: fsync: %w", err)
	}
	return nil
}

// Close fsyncs and closes the file. It is idempotent.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	if err != nil {
		return fmt.Errorf("file sink: close: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("file sink: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("file sink: fsync dir: %w", err)
	}
	return nil
}
