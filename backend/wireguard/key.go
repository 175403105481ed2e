package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultKeyFile is flanneld's private key file; the environment variable
// KeyFileEnv overrides it, as in flanneld.
const (
	DefaultKeyFile = "/run/flannel/wgkey"
	KeyFileEnv     = "WIREGUARD_KEY_FILE"
)

// ErrKeyFile is wrapped by every error about the private key file.
var ErrKeyFile = errors.New("WireGuard private key file")

// LoadOrCreateKey returns the private key in path, as flanneld keeps it
// (base64, mode 0400, no trailing newline; a trailing newline is accepted
// on reading, as flanneld's base64 decoding accepts it). When the file does
// not exist it makes a key and writes it; created says so. A file that
// exists but cannot be read or parsed is an error naming it, never
// replaced: a new key would cut this node off from every peer until they
// saw the new lease.
func LoadOrCreateKey(path string) (key wgtypes.Key, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, perr := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if perr != nil {
			return k, false, fmt.Errorf("%w %s (%d bytes) does not hold a base64-encoded 32-byte key; it is not replaced: restore it, or remove it to make a new key (which changes this node's public key)", ErrKeyFile, path, len(b))
		}
		return k, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return wgtypes.Key{}, false, fmt.Errorf("%w %s cannot be read: %w; it is not replaced", ErrKeyFile, path, err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return k, false, fmt.Errorf("making a WireGuard private key: %w", err)
	}
	if err := createExclusive(path, []byte(k.String()), 0o400); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process made it meanwhile: use theirs.
			k, _, err := LoadOrCreateKey(path)
			return k, false, err
		}
		return k, false, fmt.Errorf("%w %s: %w", ErrKeyFile, path, err)
	}
	return k, true, nil
}

// createExclusive writes data to a temporary file beside path, syncs it,
// and links it to path unless path exists (fs.ErrExist): a reader never
// sees a partial key, and an existing key is never replaced.
func createExclusive(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fs.ErrExist
		}
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
