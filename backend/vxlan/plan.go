package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/internal/base"
	"github.com/weftnet/weft/kernel/netlinkx"
)

// Plan reads the kernel (c.Netlink, or the current namespace when nil) and
// says what Set(s) would change there, without changing anything: each
// device's findings (flannel.<VNI>, and flannel-v6.<VNI> with IPv6) (missing, down, VNI, port, local address, underlay,
// MTU, MAC or address other than configured) and the entries the
// programmer would add, replace or delete. The desired entries are derived
// exactly as Set derives them.
func Plan(ctx context.Context, p backend.Params, c Config, s backend.State) (backend.Plan, error) {
	var pl backend.Plan
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return pl, err
	}
	bb, done, err := base.ForPlan(ctx, TypeName, p, c.Netlink, s)
	if err != nil {
		return pl, err
	}
	defer done()
	nl := bb.NL
	b := &Backend{Base: bb, log: bb.Log, nl: nl, cfg: p.Config, opts: opts, ext: p.Ext}
	if p.Config.EnableIPv4 {
		b.v4 = b.newTunnel(false, 0)
	}
	if p.Config.EnableIPv6 {
		b.v6 = b.newTunnel(true, 0)
	}
	for _, t := range b.tunnels() {
		if err := t.plan(&pl, s); err != nil {
			return pl, err
		}
	}
	return pl, nil
}

// plan adds the tunnel's findings and changes to pl (see Plan).
func (t *tunnel) plan(pl *backend.Plan, s backend.State) error {
	nl, ext := t.b.nl, t.b.ext
	own := t.subnetOf(&s.Own)
	name := t.name
	overhead := Overhead
	if t.six {
		overhead = OverheadIPv6
	}
	l, err := nl.LinkByName(name)
	switch {
	case errors.Is(err, netlinkx.ErrNotFound):
		pl.Device = append(pl.Device, fmt.Sprintf("%s does not exist", name))
		l = netlinkx.Link{}
	case err != nil:
		return fmt.Errorf("vxlan backend: %w", err)
	default:
		if why := misfit(l, t.want()); why != "" {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has %s", name, why))
		}
		if mac, err := ParseBackendData(t.data(&s.Own), t.b.opts.VNI); err == nil && mac != l.MAC {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has MAC %s, but the node's lease advertises %s", name, l.MAC, mac))
		}
		if !l.Up {
			pl.Device = append(pl.Device, fmt.Sprintf("%s is down", name))
		}
		if l.MTU != t.mtu {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has MTU %d, want %d (underlay %s MTU %d minus %d)", name, l.MTU, t.mtu, ext.Name, ext.MTU, overhead))
		}
		if own.IsValid() {
			want := netip.PrefixFrom(own.Addr(), own.Addr().BitLen())
			have, err := nl.Addrs(l.Index)
			if err != nil {
				return fmt.Errorf("vxlan backend: %w", err)
			}
			if !slices.Contains(have, want) {
				pl.Device = append(pl.Device, fmt.Sprintf("%s lacks address %s (has %v)", name, want, have))
			}
		}
	}
	t.link = l
	if t.extPrefix, err = nl.Addrs(ext.Index); err != nil {
		return fmt.Errorf("vxlan backend: addresses of %s: %w", ext.Name, err)
	}
	t.desired(s, false)
	pl.Skipped = append(pl.Skipped, t.d.errors()...)
	changes, err := netlinkx.NewProgrammer(nl, t.ownsRoute, 0).Plan(l.Index, &t.d)
	if err != nil {
		return fmt.Errorf("vxlan backend: %w", err)
	}
	pl.Changes = append(pl.Changes, changes...)
	return nil
}
