package labbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/bench/report"
	"github.com/weftnet/weft/subnet"
)

// IdleWireGuard fills the etcd of a one-host wireguard lab with n synthetic
// wireguard peers (fresh keys, public addresses in 172.31.0.0/16, which no
// route of the lab host reaches: the handshakes the engine starts to each
// new peer fail locally and never leave it), waits until the host's device
// has them all, lets it settle, and measures its agent's CPU over window and
// its resident memory.
func (b *Bench) IdleWireGuard(ctx context.Context, n int, window time.Duration) ([]report.Measurement, error) {
	st, upCmd, pid, store, done, err := b.oneHost(ctx, "wireguard")
	if err != nil {
		return nil, err
	}
	defer done()
	h := st.Hosts[0]
	leases := make([]subnet.Lease, 0, n)
	for i := range n {
		l, err := wireguardLease(i)
		if err != nil {
			return nil, err
		}
		leases = append(leases, l)
	}
	t0 := time.Now()
	if err := store.PutReservations(ctx, leases); err != nil {
		return nil, fmt.Errorf("writing synthetic leases: %w", err)
	}
	sock := filepath.Join(h.DataDir, "wireguard", "flannel-wg.sock")
	got := 0
	for deadline := time.Now().Add(time.Minute); ; {
		if got, err = countPeers(sock); err == nil && got >= n {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s's device has %d of %d peers after a minute (%v)", h.Name, got, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	prog := time.Since(t0)
	cmd := upCmd + "; synthetic wireguard leases put into its etcd (bench/labbench/wireguard.go); CPU from the process CPU clock of host1's weftd"
	what := fmt.Sprintf("wireguard (userspace engine), lab host's agent with %d peers", n)
	out := []report.Measurement{{What: fmt.Sprintf("%s: leases put into etcd → all on its device", what), Unit: "ms", Stat: "median", Samples: []float64{ms(prog)}, Command: cmd}}
	// Twice: while wireguard-go still retries the handshakes it started to
	// the unreachable peers (every 5 s), and once it has given up on them
	// (after 90 s): the agent's own idle cost.
	for _, m := range []struct {
		after time.Duration
		note  string
	}{
		{2 * time.Second, "while wireguard-go retries its handshakes to the (unreachable) synthetic peers every 5 s"},
		{95 * time.Second, "after wireguard-go gave up the handshakes (90 s): the agent's own idle cost"},
	} {
		time.Sleep(time.Until(t0.Add(prog + m.after)))
		idle, _, rssB, err := idleSample(pid, window)
		if err != nil {
			return nil, err
		}
		rss := float64(rssB) / (1 << 20)
		b.say("wireguard, %d peers, %s after programming: idle CPU %.2f%%, RSS %.1f MB", n, m.after, idle, rss)
		out = append(out,
			report.Measurement{What: fmt.Sprintf("%s: idle CPU over %s, %s after", what, window, m.after), Unit: "% of a CPU", Stat: "median", Samples: []float64{idle}, Command: cmd, Note: m.note},
			report.Measurement{What: fmt.Sprintf("%s: resident memory, %s after", what, m.after), Unit: "MB", Stat: "median", Samples: []float64{rss}, Command: cmd})
	}
	b.say("wireguard, %d peers: programmed in %s", n, prog.Round(time.Millisecond))
	return out, nil
}

// wireguardLease returns the i-th synthetic wireguard peer: subnet
// 10.x.y.0/24 from i+1, public IP in 172.31.0.0/16, a fresh key.
func wireguardLease(i int) (subnet.Lease, error) {
	n := i + 1
	sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 0}), 24)
	pub := netip.AddrFrom4([4]byte{172, 31, byte(n >> 8), byte(n)})
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return subnet.Lease{}, err
	}
	return subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: pub, BackendType: "wireguard",
		BackendData: []byte(`{"PublicKey":"` + k.PublicKey().String() + `","Port":51820}`)}}, nil
}

// countPeers asks a userspace engine's UAPI socket how many peers its
// device has.
func countPeers(sock string) (int, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "public_key=") {
			n++
		}
		if strings.HasPrefix(line, "errno=") {
			return n, nil
		}
	}
	return n, fmt.Errorf("UAPI answer from %s ended early: %v", sock, sc.Err())
}
