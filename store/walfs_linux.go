package store

import "golang.org/x/sys/unix"

// preallocate allocates length bytes at offset and extends the file's
// size over them (fallocate mode 0): they read as zeros until written.
func preallocate(fd uintptr, offset, length int64) error {
	return unix.Fallocate(int(fd), 0, offset, length)
}
