package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftnet/weft/internal/atomicfile"
)

// AttachmentKey is the key under which the cache records the attachment
// (container ID and interface name) inside the cached delegate config.
//
// The cache file is dataDir/<containerID>, holding the delegate config as
// flannel's plugin writes it, plus this one key, which is removed before the
// config is handed to a delegate. So flannel's own cache files read as
// attachments with an unknown interface name, and flannel's plugin can read
// ours (a delegate ignores the extra key).
const AttachmentKey = "cni.weft.dev/attachment"

// attachment is what AttachmentKey holds.
type attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// cached is one cache file.
type cached struct {
	attachment
	// Conf is the delegate config, without AttachmentKey.
	Conf map[string]any
}

func cachePath(dataDir, containerID string) string {
	return filepath.Join(dataDir, containerID)
}

// writeCache atomically writes the delegate config of an attachment, mode
// 0600. It does not fsync: a cache file lost in a power cut is rebuilt from
// subnet.env by DEL, and an fsync would add milliseconds to every pod start.
func writeCache(dataDir string, a attachment, conf map[string]any) error {
	withKey := make(map[string]any, len(conf)+1)
	for k, v := range conf {
		withKey[k] = v
	}
	withKey[AttachmentKey] = a
	data, err := json.Marshal(withKey)
	if err != nil {
		return fmt.Errorf("encoding the delegate config for %s: %w", a.ContainerID, err)
	}
	return atomicfile.WriteNoSync(cachePath(dataDir, a.ContainerID), data, 0o600)
}

// errCorrupt is wrapped when a cache file does not hold a delegate config.
var errCorrupt = errors.New("corrupt cache file")

// readCache reads the cache file of a container. A missing file satisfies
// errors.Is(err, fs.ErrNotExist); one that is not a delegate config,
// errors.Is(err, errCorrupt).
func readCache(dataDir, containerID string) (*cached, error) {
	path := cachePath(dataDir, containerID)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cached delegate config: %w", err)
	}
	c := &cached{attachment: attachment{ContainerID: containerID}}
	if err := json.Unmarshal(data, &c.Conf); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errCorrupt, path, err)
	}
	if t, ok := c.Conf["type"].(string); !ok || t == "" {
		return nil, fmt.Errorf("%w %s: no delegate \"type\"", errCorrupt, path)
	}
	if raw, ok := c.Conf[AttachmentKey]; ok {
		delete(c.Conf, AttachmentKey)
		b, _ := json.Marshal(raw)
		var a attachment
		if json.Unmarshal(b, &a) == nil && a.IfName != "" {
			c.IfName = a.IfName
		}
	}
	return c, nil
}

func removeCache(dataDir, containerID string) error {
	err := os.Remove(cachePath(dataDir, containerID))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing cached delegate config: %w", err)
	}
	return nil
}

// cachedIDs lists the container IDs with a cache file in dataDir (skipping
// directories and the temporary files of atomic writes). A missing dataDir
// holds none.
func cachedIDs(dataDir string) ([]string, error) {
	ents, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the cache directory: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}
