package atomicfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(string, []byte, os.FileMode) error
	}{{"sync", Write}, {"nosync", WriteNoSync}, {"visible first", writeVisibleFirst}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sub", "file")
			if err := tc.write(path, []byte("one\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := tc.write(path, []byte("two\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil || string(b) != "two\n" {
				t.Fatalf("content %q, %v", b, err)
			}
			st, _ := os.Stat(path)
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v", st.Mode())
			}
			ents, _ := os.ReadDir(filepath.Dir(path))
			if len(ents) != 1 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

// writeVisibleFirst is WriteVisibleFirst that checks the content is in
// place before it syncs, then syncs.
func writeVisibleFirst(path string, data []byte, perm os.FileMode) error {
	sync, err := WriteVisibleFirst(path, data, perm)
	if err != nil {
		return err
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		sync()
		return fmt.Errorf("before the sync %s holds %d bytes (%v), want the %d written", path, len(got), err, len(data))
	}
	return sync()
}

// A reader running beside the writer only ever sees whole contents.
func TestWriteNeverPartial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	a, b := bytes.Repeat([]byte("a"), 64<<10), bytes.Repeat([]byte("b"), 64<<10)
	if err := WriteNoSync(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			data, write := a, WriteNoSync
			if i%2 == 1 {
				data, write = b, writeVisibleFirst
			}
			if err := write(path, data, 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 300 {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
			t.Fatalf("read a partial file of %d bytes", len(got))
		}
	}
	close(stop)
	wg.Wait()
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(blocker, "x"), []byte("x"), 0o644); err == nil {
		t.Fatal("writing below a regular file succeeded")
	}
}
