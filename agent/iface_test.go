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
				ext, err := chooseExternal(tc.o, true, false)
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
	err := ns.Do(func() error { _, err := chooseExternal(IfaceOptions{}, true, false); return err })
	if err == nil || !strings.Contains(err.Error(), "-iface") {
		t.Errorf("no default route: err = %v, want advice naming -iface", err)
	}
}

// TestChooseExternalIPv6 picks the interface and its IPv6 address in
// dual-stack and IPv6-only networks, with flanneld's rules, including
// -iface given an IPv6 address in dual-stack (flanneld dereferences nil
// there: COMPAT-WAVE2 5.20).
func TestChooseExternalIPv6(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.NewNS(t, "iface6")
	peer := netnstest.NewNS(t, "if6peer")
	netnstest.NewVeth(t, ns, "ext0", netip.MustParsePrefix("192.0.2.10/24"), peer, "p0", netip.Prefix{})
	netnstest.NewVeth(t, ns, "ext1", netip.MustParsePrefix("198.51.100.7/24"), peer, "p1", netip.Prefix{})
	netnstest.NewVeth(t, ns, "ext2", netip.Prefix{}, peer, "p2", netip.Prefix{})
	ns.AddAddr(t, "ext0", netip.MustParsePrefix("2001:db8:0:1::10/64"))
	ns.AddAddr(t, "ext1", netip.MustParsePrefix("2001:db8:0:2::7/64"))
	ns.AddAddr(t, "ext1", netip.MustParsePrefix("2001:db8:0:2::8/64"))
	ns.AddAddr(t, "ext2", netip.MustParsePrefix("2001:db8:0:3::3/64"))
	ns.MustExec(t, "ip", "route", "add", "default", "via", "198.51.100.1", "dev", "ext1")
	ns.MustExec(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:0:2::1", "dev", "ext1")
	ns.WaitAddrsSettled(t)

	tests := []struct {
		name             string
		o                IfaceOptions
		v4               bool
		wantName         string
		wantAddr, wantA6 string
		wantPub6         string
		wantErr          string
	}{
		// The kernel lists the address added last first; flanneld takes the
		// first as listed, too.
		{name: "dual default route", v4: true, wantName: "ext1", wantAddr: "198.51.100.7", wantA6: "2001:db8:0:2::8", wantPub6: "2001:db8:0:2::8"},
		{name: "dual by name", v4: true, o: IfaceOptions{Ifaces: []string{"ext0"}}, wantName: "ext0", wantAddr: "192.0.2.10", wantA6: "2001:db8:0:1::10", wantPub6: "2001:db8:0:1::10"},
		{name: "dual by IPv6 address", v4: true, o: IfaceOptions{Ifaces: []string{"2001:db8:0:1::10"}}, wantName: "ext0", wantAddr: "192.0.2.10", wantA6: "2001:db8:0:1::10", wantPub6: "2001:db8:0:1::10"},
		{name: "dual -public-ipv6 on the interface", v4: true, o: IfaceOptions{Ifaces: []string{"ext1"}, PublicIPv6: netip.MustParseAddr("2001:db8:0:2::8")}, wantName: "ext1", wantAddr: "198.51.100.7", wantA6: "2001:db8:0:2::8", wantPub6: "2001:db8:0:2::8"},
		{name: "dual -public-ipv6 elsewhere", v4: true, o: IfaceOptions{Ifaces: []string{"ext0"}, PublicIPv6: netip.MustParseAddr("2001:db8:99::1")}, wantName: "ext0", wantAddr: "192.0.2.10", wantA6: "2001:db8:0:1::10", wantPub6: "2001:db8:99::1"},
		{name: "dual interface without IPv4", v4: true, o: IfaceOptions{Ifaces: []string{"2001:db8:0:3::3"}}, wantErr: "ext2, which has no global IPv4 address"},
		{name: "v6only default route", wantName: "ext1", wantA6: "2001:db8:0:2::8", wantPub6: "2001:db8:0:2::8"},
		{name: "v6only by name", o: IfaceOptions{Ifaces: []string{"ext2"}}, wantName: "ext2", wantA6: "2001:db8:0:3::3", wantPub6: "2001:db8:0:3::3"},
		{name: "v6only by address", o: IfaceOptions{Ifaces: []string{"2001:db8:0:1::10"}}, wantName: "ext0", wantA6: "2001:db8:0:1::10", wantPub6: "2001:db8:0:1::10"},
		{name: "v6only regex", o: IfaceOptions{Regexes: []string{`^2001:db8:0:3:`}}, wantName: "ext2", wantA6: "2001:db8:0:3::3", wantPub6: "2001:db8:0:3::3"},
		{name: "v6only -public-ipv6 is the lookup key", o: IfaceOptions{PublicIPv6: netip.MustParseAddr("2001:db8:0:1::10")}, wantName: "ext0", wantA6: "2001:db8:0:1::10", wantPub6: "2001:db8:0:1::10"},
		{name: "v6only regex matches nothing", o: IfaceOptions{Regexes: []string{"^fd"}}, wantErr: "no interface with an IPv6 address matches"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ns.Do(func() error {
				ext, err := chooseExternal(tc.o, tc.v4, true)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("err = %v, want %q", err, tc.wantErr)
					}
					return nil
				}
				if err != nil {
					return err
				}
				addr := ""
				if ext.Addr.IsValid() {
					addr = ext.Addr.String()
				}
				if ext.Name != tc.wantName || addr != tc.wantAddr || ext.Addr6.String() != tc.wantA6 || ext.PublicIPv6.String() != tc.wantPub6 {
					t.Errorf("got %+v, want %s %q addr6 %s public %s", ext, tc.wantName, tc.wantAddr, tc.wantA6, tc.wantPub6)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("dual default routes on two interfaces", func(t *testing.T) {
		ns.MustExec(t, "ip", "-6", "route", "replace", "default", "via", "2001:db8:0:1::1", "dev", "ext0")
		defer ns.MustExec(t, "ip", "-6", "route", "replace", "default", "via", "2001:db8:0:2::1", "dev", "ext1")
		err := ns.Do(func() error { _, err := chooseExternal(IfaceOptions{}, true, true); return err })
		if err == nil || !strings.Contains(err.Error(), "IPv6 default route is on ext0, the IPv4 one on ext1") {
			t.Errorf("err = %v", err)
		}
	})
}
