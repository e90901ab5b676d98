// Package atomicfile replaces small files (cursors, markers, notes) so
// that a power cut leaves the old content or the new, never a mix or an
// empty file: write a temporary file, fsync it, rename it over the old one,
// fsync the directory. It is the storage packages' and the runtime's one
// copy of that sequence.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with b, created with perm: it writes b to path+".tmp",
// fsyncs it and renames it over path. On error the temporary file is
// removed and path is as it was. The rename survives a power cut only once
// the directory is fsynced: call SyncDir, once for several files, or use
// WriteDurable.
func Write(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// WriteDurable is Write followed by SyncDir of path's directory: when it
// returns nil, b is what path holds after a power cut.
func WriteDurable(path string, b []byte, perm os.FileMode) error {
	if err := Write(path, b, perm); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs the directory dir, which makes the files created,
// renamed and removed in it survive a power cut.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
