package buffer

import (
	"errors"
	"os"
	"path/filepath"
)

// The modes of what a log creates: the directory and its files are the
// owner's to write and the group's to read (`buffer inspect` by an
// operator of the service's group), never anyone else's: the records are
// payloads the sites may not want readable by every account of the
// gateway. They are given explicitly, so that a umask of 0 (a shell, a
// container) cannot widen them; a stricter umask narrows them further.
const (
	dirPerm  os.FileMode = 0o750
	filePerm os.FileMode = 0o640
)

// tightenDir takes from dir and the files in it the mode bits that
// dirPerm and filePerm do not give (group write, anything for others):
// what an older version created 0755 and 0644. It only removes bits, so a
// directory an operator made stricter stays so. It returns the first
// error, after trying every file.
func tightenDir(dir string) error {
	err := tighten(dir, dirPerm)
	entries, rerr := os.ReadDir(dir)
	err = errors.Join(err, rerr)
	for _, e := range entries {
		if e.Type().IsRegular() {
			err = errors.Join(err, tighten(filepath.Join(dir, e.Name()), filePerm))
		}
	}
	return err
}

// tighten removes from path's mode the bits that allowed does not have.
func tighten(path string, allowed os.FileMode) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if extra := fi.Mode().Perm() &^ allowed; extra != 0 {
		return os.Chmod(path, fi.Mode().Perm()&allowed)
	}
	return nil
}
