package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// cacheEntry is the part of a libcni cache file the doctor reads.
type cacheEntry struct {
	ContainerID string `json:"containerId"`
	IfName      string `json:"ifName"`
	NetworkName string `json:"networkName"`
	NetNS       string `json:"netns"`
}

// checkReservations finds host-local reservations in the node's subnet
// whose container is gone: the CNI cache names the container's network
// namespace, and that namespace no longer exists (or no cache entry names
// the reservation at all).
func (n *node) checkReservations() Result {
	res := Result{Check: "host-local reservations"}
	sn := n.ownSubnet()
	if !sn.IsValid() {
		res.Status, res.Verdict = Unknown, "cannot check without the node's lease"
		return res
	}
	nets, err := os.ReadDir(n.o.IPAMDir)
	if errors.Is(err, fs.ErrNotExist) {
		res.Status, res.Verdict = OK, "no host-local store at "+n.o.IPAMDir
		return res
	}
	if err != nil {
		res.Status, res.Verdict, res.Cause = Unknown, "cannot read "+n.o.IPAMDir, err.Error()
		return res
	}
	total := 0
	var leaked, fix, uncached []string
	for _, nd := range nets {
		if !nd.IsDir() {
			continue
		}
		dir := filepath.Join(n.o.IPAMDir, nd.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range files {
			ip, err := netip.ParseAddr(f.Name())
			if err != nil || !sn.Contains(ip) {
				continue
			}
			total++
			path := filepath.Join(dir, f.Name())
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
			id, ifname := strings.TrimSpace(lines[0]), ""
			if len(lines) > 1 {
				ifname = strings.TrimSpace(lines[1])
			}
			why, cache := n.orphaned(nd.Name(), id, ifname)
			if why == "" {
				continue
			}
			if cache == "" {
				uncached = append(uncached, fmt.Sprintf("%s (container %s, %s): %s", ip, short(id), ifname, why))
				continue
			}
			leaked = append(leaked, fmt.Sprintf("%s (container %s, %s): %s", ip, short(id), ifname, why))
			fix = append(fix, "rm "+path, "rm "+cache)
		}
	}
	if len(leaked) == 0 && len(uncached) > 0 {
		res.Status, res.Verdict = Warn, fmt.Sprintf("%d of %d host-local reservations in %s have no CNI cache entry: cannot tell whether their containers exist", len(uncached), total, sn)
		res.Details = uncached
		res.Cause = "the runtime keeps no libcni cache in " + n.o.CNICacheDir + " (give weft doctor -cni-cache-dir), or the entries were removed"
		return res
	}
	if len(leaked) == 0 {
		res.Status, res.Verdict = OK, fmt.Sprintf("%s in %s, each with its container's namespace present", count(total, "reservation"), sn)
		return res
	}
	free := sn.Bits()
	res.Status = Problem
	res.Verdict = fmt.Sprintf("%d of %d host-local reservations in %s have no container behind them", len(leaked), total, sn)
	res.Details = append(leaked, uncached...)
	res.Cause = fmt.Sprintf("a container was removed without a CNI DEL (a runtime crash, a reboot with a persistent /var/lib/cni); leaked addresses stay reserved until the /%d range is exhausted and new pods fail with \"no IP addresses available\"", free)
	res.Fix = append([]string{"check that the containers are really gone (crictl ps -a / podman ps -a), then:"}, fix...)
	return res
}

// orphaned says why the reservation of container id on ifname in network
// netName has no container ("" when it has one), and the cache file that
// names it.
func (n *node) orphaned(netName, id, ifname string) (string, string) {
	cache := filepath.Join(n.o.CNICacheDir, "results", netName+"-"+id+"-"+ifname)
	b, err := os.ReadFile(cache)
	if errors.Is(err, fs.ErrNotExist) {
		return "no CNI cache entry names it (" + cache + ")", ""
	}
	if err != nil {
		return "", ""
	}
	var e cacheEntry
	if json.Unmarshal(b, &e) != nil || e.NetNS == "" {
		return "", "" // cannot tell
	}
	if _, err := os.Stat(e.NetNS); errors.Is(err, fs.ErrNotExist) {
		return "its network namespace " + e.NetNS + " is gone", cache
	}
	return "", ""
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
