package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/internal/base"
	"github.com/weftnet/weft/kernel/netlinkx"
	"github.com/weftnet/weft/kernel/wg"
)

// Plan reads the kernel (c.Netlink, or the current namespace when nil) and
// the device's peers (c.Inspect) and says what Set(s) would change,
// without changing anything: the device's findings (missing, not a
// WireGuard device, down, MTU, address, the engine other than the one
// forced), the route and the peers Set would add, replace or remove, and
// the peers it would skip. The desired peers are derived exactly as Set
// derives them; this node's public key is taken from its lease.
func Plan(ctx context.Context, p backend.Params, c Config, s backend.State) (backend.Plan, error) {
	var pl backend.Plan
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return pl, err
	}
	if err := ipv4Only(p.Config); err != nil {
		return pl, err
	}
	mtu, err := deviceMTU(opts, p)
	if err != nil {
		return pl, err
	}
	nl := c.Netlink
	if nl == nil {
		h, err := netlinkx.Open()
		if err != nil {
			return pl, fmt.Errorf("wireguard backend: %w", err)
		}
		defer h.Close()
		nl = h
	}
	inspect := c.Inspect
	if inspect == nil {
		inspect = wg.Inspect
	}
	sock := c.Host.SocketDir
	if sock == "" {
		sock = DefaultSocketDir
	}
	// A Base without a session or programmer: Plan follows nothing and
	// writes nothing; Begin checks the own subnet as Set's does.
	bb := &base.Base{Name: TypeName, Log: slog.New(slog.DiscardHandler), Cfg: p.Config, Ext: p.Ext, NL: nl}
	if err := bb.Begin(ctx, s); err != nil {
		return pl, err
	}
	b := &Backend{Base: bb, opts: opts, mtu: mtu}
	if d, err := ParseBackendData(s.Own.Attrs.BackendData); err == nil {
		b.pub = d.PublicKey
	}

	l, err := nl.LinkByName(DeviceName)
	missing := errors.Is(err, netlinkx.ErrNotFound)
	switch {
	case missing:
		pl.Device = append(pl.Device, DeviceName+" does not exist")
	case err != nil:
		return pl, fmt.Errorf("wireguard backend: %w", err)
	default:
		b.linkIndex.Store(int64(l.Index))
		if !l.Up {
			pl.Device = append(pl.Device, DeviceName+" is down")
		}
		if l.MTU != mtu {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has MTU %d, want %d (the underlay's minus the WireGuard overhead)", DeviceName, l.MTU, mtu))
		}
		want := netip.PrefixFrom(s.Own.Subnet.Addr(), 32)
		have, err := nl.Addrs(l.Index)
		if err != nil {
			return pl, fmt.Errorf("wireguard backend: %w", err)
		}
		if !slices.Contains(have, want) {
			pl.Device = append(pl.Device, fmt.Sprintf("%s lacks the address %s (has %v)", DeviceName, want, have))
		}
		routes := netlinkx.NewEntries(1)
		routes.Routes[p.Config.Network] = netlinkx.Route{Dst: p.Config.Network, LinkIndex: l.Index}
		changes, err := netlinkx.NewProgrammer(nl, b.ownsRoute, 0).Plan(0, routes)
		if err != nil {
			return pl, fmt.Errorf("wireguard backend: %w", err)
		}
		pl.Changes = append(pl.Changes, changes...)
	}

	want, skipped := b.desired(s)
	pl.Skipped = skipped
	if missing {
		return pl, nil
	}
	kind, have, err := inspect(DeviceName, sock)
	if err != nil {
		pl.Device = append(pl.Device, fmt.Sprintf("cannot read the peers of %s: %v", DeviceName, err))
		return pl, nil
	}
	if (opts.Engine == wg.ForceKernel && kind != wg.Kernel) || (opts.Engine == wg.ForceUserspace && kind != wg.Userspace) {
		pl.Device = append(pl.Device, fmt.Sprintf("%s is served by the %s engine, but the config asks for %s", DeviceName, kind, opts.Engine))
	}
	pl.Changes = append(pl.Changes, PeerChanges(have, want)...)
	return pl, nil
}

// PeerChanges lists how the device's peers (have) differ from the wanted
// ones: missing, stale (configured otherwise) and extra peers.
func PeerChanges(have, want []wg.Peer) []netlinkx.Change {
	set, remove := DiffPeers(have, want)
	cur := make(map[wg.Key]wg.Peer, len(have))
	for _, p := range have {
		cur[p.PublicKey] = p
	}
	var out []netlinkx.Change
	for _, p := range set {
		c := netlinkx.Change{Kind: netlinkx.Missing, Object: "wireguard peer", Key: p.PublicKey.String(), Want: p.String()}
		if h, ok := cur[p.PublicKey]; ok {
			c.Kind, c.Have = netlinkx.Stale, h.String()
		}
		out = append(out, c)
	}
	for _, k := range remove {
		out = append(out, netlinkx.Change{Kind: netlinkx.Extra, Object: "wireguard peer", Key: k.String(), Have: cur[k].String()})
	}
	return out
}
