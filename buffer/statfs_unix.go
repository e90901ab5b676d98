//go:build unix

package buffer

import "syscall"

// diskFree returns the bytes an unprivileged process may still write on
// the file system holding dir (statfs f_bavail), or -1 if unknown.
func diskFree(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize) // the field types differ by platform
}
