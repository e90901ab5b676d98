//go:build unix

package buffer

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/pspf/pspf-edge/internal/flock"
)

// lockDir takes an exclusive flock on dir/LOCK. Opening the lock file for
// writing is also the check that dir is writable.
func lockDir(dir string) (*flock.File, error) {
	l, err := flock.Exclusive(filepath.Join(dir, lockName), filePerm)
	switch {
	case errors.Is(err, flock.ErrLocked):
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	case err != nil && isReadOnly(err):
		return nil, fmt.Errorf("%w: %s: %w", ErrReadOnly, dir, err)
	case err != nil:
		return nil, fmt.Errorf("buffer: lock %s: %w", dir, err)
	}
	return l, nil
}
