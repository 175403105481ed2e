package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/netnstest"
)

// TestChooseExternal picks the external interface in a namespace holding
// two links, as -iface, -iface-regex, -public-ip and the default route say.
func TestChooseExternal(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "iface")
	peer := netnstest.NewNS(t, "ifpeer")
	netnstest.NewVeth(t, ns, "ext0", netip.MustParsePrefix("192.0.2.10/24"), peer, "p0", netip.Prefix{})
	netnstest.NewVeth(t, ns, "ext1", netip.MustParsePrefix("198.51.100.7/24"), peer, "p1", netip.Prefix{})
	ns.MustExec(t, "ip", "link", "set", "ext1", "mtu", "1400")
	ns.MustExec(t, "ip", "route", "add", "default", "via", "198.51.100.1", "dev", "ext1")

	tests := []struct {
		name     string
		o        IfaceOptions
		wantName string
		wantAddr string
		wantPub  string
		wantErr  string
	}{
		{name: "default route", o: IfaceOptions{}, wantName: "ext1", wantAddr: "198.51.100.7", wantPub: "198.51.100.7"},
		{name: "by name", o: IfaceOptions{Ifaces: []string{"ext0"}}, wantName: "ext0", wantAddr: "192.0.2.10", wantPub: "192.0.2.10"},
		{name: "by address", o: IfaceOptions{Ifaces: []string{"198.51.100.7"}}, wantName: "ext1", wantAddr: "198.51.100.7", wantPub: "198.51.100.7"},
		{name: "first that exists", o: IfaceOptions{Ifaces: []string{"nosuch", "ext0"}}, wantName: "ext0", wantAddr: "192.0.2.10", wantPub: "192.0.2.10"},
		{name: "regex on name", o: IfaceOptions{Regexes: []string{"^ext0$"}}, wantName: "ext0", wantAddr: "192.0.2.10", wantPub: "192.0.2.10"},
		{name: "regex on address", o: IfaceOptions{Regexes: []string{`^198\.51\.`}}, wantName: "ext1", wantAddr: "198.51.100.7", wantPub: "198.51.100.7"},
		{name: "public ip", o: IfaceOptions{Ifaces: []string{"ext0"}, PublicIP: netip.MustParseAddr("203.0.113.5")}, wantName: "ext0", wantAddr: "192.0.2.10", wantPub: "203.0.113.5"},
		{name: "no such interface", o: IfaceOptions{Ifaces: []string{"nosuch"}}, wantErr: `no interface named "nosuch"`},
		{name: "no such address", o: IfaceOptions{Ifaces: []string{"10.9.9.9"}}, wantErr: "no interface has address 10.9.9.9"},
		{name: "bad regex", o: IfaceOptions{Regexes: []string{"("}}, wantErr: `-iface-regex "("`},
		{name: "regex matches nothing", o: IfaceOptions{Regexes: []string{"^eth"}}, wantErr: "no interface with an IPv4 address matches"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ns.Do(func() error {
				ext, err := chooseExternal(tc.o)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("err = %v, want %q", err, tc.wantErr)
					}
					return nil
				}
				if err != nil {
					return err
				}
				if ext.Name != tc.wantName || ext.Addr.String() != tc.wantAddr || ext.PublicIP.String() != tc.wantPub || ext.Index <= 0 {
					t.Errorf("got %+v, want %s %s public %s", ext, tc.wantName, tc.wantAddr, tc.wantPub)
				}
				if ext.Name == "ext1" && ext.MTU != 1400 {
					t.Errorf("MTU %d, want 1400", ext.MTU)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// Without a default route and without flags, the error says what to do.
	ns.MustExec(t, "ip", "route", "del", "default")
	err := ns.Do(func() error { _, err := chooseExternal(IfaceOptions{}); return err })
	if err == nil || !strings.Contains(err.Error(), "-iface") {
		t.Errorf("no default route: err = %v, want advice naming -iface", err)
	}
}
