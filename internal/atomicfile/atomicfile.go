// Package atomicfile replaces files so that a reader sees either the old
// content or the new, never a part: write a temporary file in the same
// directory, sync it, rename it over the target, sync the directory.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write atomically replaces path with data, created with perm, and syncs it
// to disk before and after the rename, so that the new content survives a
// crash. It creates the parent directory (0755) when missing.
func Write(path string, data []byte, perm os.FileMode) error {
	_, err := write(path, data, perm, syncBefore)
	return err
}

// WriteNoSync atomically replaces path as Write does, without the fsyncs:
// readers never see a partial file, but after a power loss the file may hold
// the old content or be empty. For caches whose readers can rebuild a lost
// entry (the CNI plugin's), where an fsync would cost milliseconds on every
// pod start.
func WriteNoSync(path string, data []byte, perm os.FileMode) error {
	_, err := write(path, data, perm, noSync)
	return err
}

// WriteVisibleFirst atomically replaces path as Write does and returns as
// soon as readers see the new content, with sync, which syncs the file and
// its directory as Write does and closes the file: it must be called once,
// from any goroutine. Readers see the content a sync sooner (milliseconds on
// a busy disk), and the caller need not wait for the disk; once sync has
// returned the content survives a crash; a crash before may leave the file
// empty, as WriteNoSync may. For files that a reader waits for and that are
// rewritten at every start (subnet.env).
func WriteVisibleFirst(path string, data []byte, perm os.FileMode) (sync func() error, err error) {
	return write(path, data, perm, syncAfter)
}

// syncMode says when write syncs the file and its directory.
type syncMode int

const (
	noSync     syncMode = iota
	syncBefore          // the file before the rename, the directory after
	syncAfter           // both after the rename, in the function returned
)

// write replaces path; with syncAfter it returns the function that syncs.
func write(path string, data []byte, perm os.FileMode, sync syncMode) (after func() error, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if err != nil && !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return nil, fmt.Errorf("setting mode of %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return nil, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if sync == syncBefore {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("syncing %s: %w", tmp, err)
		}
	}
	if sync != syncAfter {
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("closing %s: %w", tmp, err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("replacing %s: %w", path, err)
	}
	renamed = true
	syncDir := func() {
		if d, derr := os.Open(dir); derr == nil {
			d.Sync() // best effort: the rename is already visible to readers
			d.Close()
		}
	}
	switch sync {
	case syncBefore:
		syncDir()
	case syncAfter:
		return func() error {
			serr := f.Sync()
			cerr := f.Close()
			if serr != nil {
				return fmt.Errorf("syncing %s: %w", path, serr)
			}
			if cerr != nil {
				return fmt.Errorf("closing %s: %w", path, cerr)
			}
			syncDir()
			return nil
		}, nil
	}
	return nil, nil
}
