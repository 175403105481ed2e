package vxlan

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
)

// Plan reads the kernel (c.Netlink, or the current namespace when nil) and
// says what Set(s) would change there, without changing anything: the
// device's findings (missing, down, VNI, port, local address, underlay,
// MTU, MAC or address other than configured) and the entries the
// programmer would add, replace or delete. The desired entries are derived
// exactly as Set derives them.
func Plan(ctx context.Context, p backend.Params, c Config, s backend.State) (backend.Plan, error) {
	var pl backend.Plan
	opts, err := ParseOptions(p.Config.Backend)
	if err != nil {
		return pl, err
	}
	if err := ctx.Err(); err != nil {
		return pl, err
	}
	nl := c.Netlink
	if nl == nil {
		h, err := netlinkx.Open()
		if err != nil {
			return pl, fmt.Errorf("vxlan backend: %w", err)
		}
		defer h.Close()
		nl = h
	}
	// A Base without a session or programmer: Plan follows nothing and
	// writes nothing; Begin records the own subnet as Set's does.
	bb := &base.Base{Name: TypeName, Log: slog.New(slog.DiscardHandler), Cfg: p.Config, Ext: p.Ext, NL: nl}
	if err := bb.Begin(ctx, s); err != nil {
		return pl, err
	}
	b := &Backend{Base: bb, log: bb.Log, nl: nl, cfg: p.Config, opts: opts, ext: p.Ext}
	b.mtu = opts.MTU
	if b.mtu == 0 {
		b.mtu = p.Ext.MTU - Overhead
	}
	own := s.Own.Subnet

	name := opts.DeviceName()
	l, err := nl.LinkByName(name)
	switch {
	case errors.Is(err, netlinkx.ErrNotFound):
		pl.Device = append(pl.Device, fmt.Sprintf("%s does not exist", name))
		l = netlinkx.Link{}
	case err != nil:
		return pl, fmt.Errorf("vxlan backend: %w", err)
	default:
		if why := misfit(l, b.want()); why != "" {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has %s", name, why))
		}
		if mac, err := ParseBackendData(s.Own.Attrs.BackendData, opts.VNI); err == nil && mac != l.MAC {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has MAC %s, but the node's lease advertises %s", name, l.MAC, mac))
		}
		if !l.Up {
			pl.Device = append(pl.Device, fmt.Sprintf("%s is down", name))
		}
		if l.MTU != b.mtu {
			pl.Device = append(pl.Device, fmt.Sprintf("%s has MTU %d, want %d (underlay %s MTU %d minus %d)", name, l.MTU, b.mtu, p.Ext.Name, p.Ext.MTU, Overhead))
		}
		if own.IsValid() {
			want := netip.PrefixFrom(own.Addr(), 32)
			have, err := nl.Addrs(l.Index)
			if err != nil {
				return pl, fmt.Errorf("vxlan backend: %w", err)
			}
			if !slices.Contains(have, want) {
				pl.Device = append(pl.Device, fmt.Sprintf("%s lacks address %s (has %v)", name, want, have))
			}
		}
	}
	b.link = l
	if b.extPrefix, err = nl.Addrs(p.Ext.Index); err != nil {
		return pl, fmt.Errorf("vxlan backend: addresses of %s: %w", p.Ext.Name, err)
	}
	b.desired(s)
	pl.Skipped = b.d.errors()
	pl.Changes, err = netlinkx.NewProgrammer(nl, b.ownsRoute, 0).Plan(l.Index, b.d.want)
	if err != nil {
		return pl, fmt.Errorf("vxlan backend: %w", err)
	}
	return pl, nil
}
