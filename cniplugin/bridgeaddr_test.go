package cniplugin_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/cnitest"
)

// TestStaleBridgeAddressExplained gives cni0 the gateway address of an
// earlier subnet, as a node whose lease changed has it, and checks that
// the plugin's ADD error says what happened and what to run, for every
// spec version.
func TestStaleBridgeAddressExplained(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	for _, args := range [][]string{
		{"link", "add", "cni0", "type", "bridge"},
		{"addr", "add", "10.245.7.1/24", "dev", "cni0"},
		{"link", "set", "cni0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", h.NS.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			err := h.Add(h.FlannelConfList(t, v), h.NewPod(t))
			if err == nil {
				t.Fatal("ADD succeeded with cni0 holding another subnet's address")
			}
			msg := err.Error()
			t.Logf("ADD failed as wanted: %s", msg)
			for _, want := range []string{
				`"cni0" already has an IP address different from 10.244.52.1/24`,
				"FLANNEL_SUBNET is now 10.244.52.1/24",
				"ip link delete cni0",
				"weft doctor",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("ADD error does not say %q:\n%s", want, msg)
				}
			}
			assertClean(t, h)
		})
	}
}
