package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/weftnet/weft/test/netnstest"
)

// ensureSysctl turns forwarding on where it may, and only warns where it
// may not (an unprivileged container's read-only /proc/sys).
func TestEnsureSysctl(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		content  string
		readOnly bool
		wantFile string
		wantLog  string
	}{
		{name: "off, writable", content: "0\n", wantFile: "1\n", wantLog: "enabled net.ipv4.ip_forward"},
		{name: "already on", content: "1\n", wantFile: "1\n", wantLog: ""},
		{name: "off, read-only", content: "0\n", readOnly: true, wantFile: "0\n", wantLog: "cannot be turned on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if tc.readOnly {
				// What an unprivileged container sees: the file on a
				// read-only mount (root ignores file modes). The mount is
				// made in a mount namespace of this goroutine's own
				// thread, which is never unlocked, so the Go runtime
				// discards it and the host's mounts are never touched.
				errc := make(chan error, 1)
				go func() {
					runtime.LockOSThread()
					errc <- readOnlyDo(path, func() { ensureSysctl(log, path) })
				}()
				if err := <-errc; err != nil {
					netnstest.Unavailable(t, "cannot make a read-only mount (needs root): %v", err)
				}
			} else {
				ensureSysctl(log, path)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tc.wantFile {
				t.Errorf("file = %q, want %q", got, tc.wantFile)
			}
			if tc.wantLog == "" && logs.Len() > 0 || !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log = %q, want %q", logs.String(), tc.wantLog)
			}
		})
	}
}

// readOnlyDo runs fn with path bind-mounted read-only over itself, in a new
// mount namespace of the calling (locked) thread.
func readOnlyDo(path string, fn func()) error {
	if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
		return err
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return err
	}
	if err := syscall.Mount(path, path, "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	if err := syscall.Mount("", path, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		return err
	}
	fn()
	return nil
}
