package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/internal/atomicfile"
)

// A state file found damaged is renamed, not deleted: what is left in it
// can still be read with bbolt's tools. These names sit beside it.
const (
	// noteSuffix names the note DB.Close leaves beside a file it found
	// damaged while in use; Open then reports the file as damaged.
	noteSuffix = ".suspect"
	// asideSuffix ends the name of a file moved aside by MoveAside:
	// path + "." + UTC time + asideSuffix.
	asideSuffix = ".damaged"
	// asideTime is the time format in those names.
	asideTime = "20060102T150405Z"
)

// MaxAside is how many damaged copies of one state file MoveAside keeps;
// it deletes older ones, so that a card going bad does not fill its own
// disk with copies.
const MaxAside = 3

// MoveAside renames the damaged state file at path out of the way, to
// path.<UTC time of now>.damaged (with a counter if that name is taken),
// removes the note DB.Close may have left beside it, deletes the oldest
// copies beyond MaxAside, and fsyncs the directory, so that the next Open
// creates a new, empty file. It returns the new name, or "" when there was
// no file to move. The file must not be open.
func MoveAside(path string, now time.Time) (string, error) {
	dir := filepath.Dir(path)
	dst := ""
	if _, err := os.Lstat(path); err == nil {
		base := path + "." + now.UTC().Format(asideTime)
		dst = base + asideSuffix
		for i := 1; ; i++ {
			if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
				break
			}
			dst = fmt.Sprintf("%s.%d%s", base, i, asideSuffix)
		}
		if err := os.Rename(path, dst); err != nil {
			return "", fmt.Errorf("state: move aside %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("state: move aside %s: %w", path, err)
	}
	if err := os.Remove(path + noteSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return dst, fmt.Errorf("state: move aside %s: %w", path, err)
	}
	if err := pruneAside(path); err != nil {
		return dst, err
	}
	if err := syncDir(dir); err != nil {
		return dst, fmt.Errorf("state: move aside %s: %w", path, err)
	}
	return dst, nil
}

// AsideFiles returns the damaged copies of the state file at path that
// MoveAside kept, oldest first.
func AsideFiles(path string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("state: list damaged copies of %s: %w", path, err)
	}
	type aside struct {
		name, stamp string
		n           int
	}
	var found []aside
	prefix := filepath.Base(path) + "."
	for _, e := range ents {
		mid, ok := strings.CutPrefix(e.Name(), prefix)
		if mid, ok = strings.CutSuffix(mid, asideSuffix); !ok {
			continue
		}
		stamp, count, _ := strings.Cut(mid, ".")
		if _, err := time.Parse(asideTime, stamp); err != nil {
			continue
		}
		n, _ := strconv.Atoi(count)
		found = append(found, aside{filepath.Join(filepath.Dir(path), e.Name()), stamp, n})
	}
	// sort.Slice, not slices.SortFunc: a generic sort of a struct is 12 KB
	// of code of its own (for a list read once at open); sort.Slice's is
	// shared.
	sort.Slice(found, func(i, j int) bool {
		if found[i].stamp != found[j].stamp {
			return found[i].stamp < found[j].stamp
		}
		return found[i].n < found[j].n
	})
	out := make([]string, len(found))
	for i, a := range found {
		out[i] = a.name
	}
	return out, nil
}

// pruneAside deletes the oldest damaged copies beyond MaxAside.
func pruneAside(path string) error {
	files, err := AsideFiles(path)
	if err != nil {
		return err
	}
	for len(files) > MaxAside {
		if err := os.Remove(files[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("state: delete old damaged copy: %w", err)
		}
		files = files[1:]
	}
	return nil
}

// writeNote leaves the note that path was found damaged while in use, with
// its cause, so that a power cut leaves either no note or the whole one:
// temp file, fsync, rename, fsync the directory.
func writeNote(path string, cause error) error {
	msg := strings.ReplaceAll(cause.Error(), "\n", " ")
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	if err := atomicfile.WriteDurable(path+noteSuffix, []byte(msg+"\n"), 0o600); err != nil {
		return fmt.Errorf("write damage note: %w", err)
	}
	return nil
}

// readNote returns the note left beside path by writeNote, or "".
func readNote(path string) (string, error) {
	b, err := os.ReadFile(path + noteSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read damage note: %w", err)
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s, nil
	}
	return "no cause recorded", nil
}
