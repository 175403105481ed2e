package hostgw

import (
	"context"
	"fmt"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/internal/base"
	"github.com/weftnet/weft/kernel/netlinkx"
)

// Plan reads the kernel (c.Netlink, or the current namespace when nil) and
// says which routes Set(s) would add, replace or delete, without changing
// anything. The desired routes are derived exactly as Set derives them.
func Plan(ctx context.Context, p backend.Params, c Config, s backend.State) (backend.Plan, error) {
	var pl backend.Plan
	bb, done, err := base.ForPlan(ctx, TypeName, p, c.Netlink, s)
	if err != nil {
		return pl, err
	}
	defer done()
	nl := bb.NL
	b := &Backend{Base: bb}
	ps, err := nl.Addrs(p.Ext.Index)
	if err != nil {
		return pl, fmt.Errorf("host-gw backend: addresses of %s: %w", p.Ext.Name, err)
	}
	b.extPrefix = ps
	want, skipped := b.desired(s)
	pl.Skipped = skipped
	if pl.Changes, err = netlinkx.NewProgrammer(nl, b.ownsRoute, 0).Plan(0, want); err != nil {
		return pl, fmt.Errorf("host-gw backend: %w", err)
	}
	return pl, nil
}
