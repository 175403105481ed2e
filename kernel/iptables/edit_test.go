package iptables_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/kernel/iptables"
	"github.com/weftnet/weft/test/netnstest"
)

// TestInsertFirstDeleteEvery edits one rule of a shared chain in a
// namespace of its own: inserted once at the top however often it is asked
// for, and every copy deleted.
func TestInsertFirstDeleteEvery(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "ipt")
	other := iptables.Rule{Table: "filter", Chain: "FORWARD", Spec: []string{"-i", "a0", "-j", "ACCEPT"}}
	mine := iptables.Rule{Table: "filter", Chain: "FORWARD", Spec: []string{"-i", "b0", "-o", "b0", "-m", "comment", "--comment", "weft test", "-j", "ACCEPT"}}
	err := ns.Do(func() error {
		ipt, err := iptables.New(firewall.IPv4)
		if err != nil {
			return err
		}
		if err := ipt.Append(other.Table, other.Chain, other.Spec...); err != nil {
			return err
		}
		for range 2 {
			if err := iptables.InsertFirst(ipt, mine); err != nil {
				return err
			}
		}
		lines, err := ipt.List("filter", "FORWARD")
		if err != nil {
			return err
		}
		want := []string{"-P FORWARD ACCEPT", `-A FORWARD -i b0 -o b0 -m comment --comment "weft test" -j ACCEPT`, "-A FORWARD -i a0 -j ACCEPT"}
		if !slices.Equal(lines, want) {
			t.Errorf("after InsertFirst twice:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		// A second copy (as a crashed run could leave) goes too.
		if err := ipt.Append(mine.Table, mine.Chain, mine.Spec...); err != nil {
			return err
		}
		if err := iptables.DeleteEvery(ipt, mine); err != nil {
			return err
		}
		if err := iptables.DeleteEvery(ipt, mine); err != nil {
			t.Errorf("DeleteEvery of a missing rule: %v", err)
		}
		lines, err = ipt.List("filter", "FORWARD")
		if err != nil {
			return err
		}
		if want := []string{"-P FORWARD ACCEPT", "-A FORWARD -i a0 -j ACCEPT"}; !slices.Equal(lines, want) {
			t.Errorf("after DeleteEvery:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
