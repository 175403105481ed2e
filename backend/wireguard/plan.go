package wireguard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
	mtu4, mtu6, err := deviceMTUs(opts, p)
	if err != nil {
		return pl, err
	}
	inspect := c.Inspect
	if inspect == nil {
		inspect = wg.Inspect
	}
	sock := c.Host.SocketDir
	if sock == "" {
		sock = DefaultSocketDir
	}
	bb, done, err := base.ForPlan(ctx, TypeName, p, c.Netlink, s)
	if err != nil {
		return pl, err
	}
	defer done()
	b := &Backend{Base: bb, opts: opts}
	own := s.Own.Attrs.BackendData
	if !p.Config.EnableIPv4 {
		own = s.Own.Attrs.BackendV6Data
	}
	if d, err := ParseBackendData(own); err == nil {
		b.pub = d.PublicKey
	}
	b.makeDevices(mtu4, mtu6)
	for _, d := range b.devices() {
		if err := d.plan(&pl, s, opts, inspect, sock); err != nil {
			return pl, err
		}
	}
	return pl, nil
}

// plan adds to pl what Set would change on the device.
func (d *device) plan(pl *backend.Plan, s backend.State, opts Options, inspect func(name, socketDir string) (wg.Kind, []wg.Peer, error), sock string) error {
	nl := d.b.NL
	l, err := nl.LinkByName(d.name)
	missing := errors.Is(err, netlinkx.ErrNotFound)
	switch {
	case missing:
		pl.Device = append(pl.Device, d.name+" does not exist")
	case err != nil:
		return fmt.Errorf("wireguard backend: %w", err)
	default:
		d.linkIndex.Store(int64(l.Index))
		if !l.Up {
			pl.Device = append(pl.Device, d.name+" is down")
		}
		if l.MTU != d.mtu {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has MTU %d, want %d (the underlay's minus the WireGuard overhead)", d.name, l.MTU, d.mtu))
		}
		have, err := nl.Addrs(l.Index)
		if err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
		for _, o := range d.owns(&s.Own) {
			if want := ownAddr(o); o.IsValid() && !slices.Contains(have, want) {
				pl.Device = append(pl.Device, fmt.Sprintf("%s lacks the address %s (has %v)", d.name, want, have))
			}
		}
		changes, err := d.prog.Plan(0, d.routes(l.Index))
		if err != nil {
			return fmt.Errorf("wireguard backend: %w", err)
		}
		pl.Changes = append(pl.Changes, changes...)
	}

	want, skipped := d.desired(s)
	pl.Skipped = append(pl.Skipped, skipped...)
	if missing {
		return nil
	}
	kind, have, err := inspect(d.name, sock)
	if err != nil {
		pl.Device = append(pl.Device, fmt.Sprintf("cannot read the peers of %s: %v", d.name, err))
		return nil
	}
	if (opts.Engine == wg.ForceKernel && kind != wg.Kernel) || (opts.Engine == wg.ForceUserspace && kind != wg.Userspace) {
		pl.Device = append(pl.Device, fmt.Sprintf("%s is served by the %s engine, but the config asks for %s", d.name, kind, opts.Engine))
	}
	pl.Changes = append(pl.Changes, PeerChanges(have, want)...)
	return nil
}

// PeerChanges lists how the device's peers (have) differ from the wanted
// ones: missing, stale (configured otherwise) and extra peers. A peer that
// roamed (see roamed) is not stale for its endpoint.
func PeerChanges(have, want []wg.Peer) []netlinkx.Change {
	set, remove := DiffPeers(have, want, time.Now(), nil)
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
