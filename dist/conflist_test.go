package dist

import (
	"os"
	"testing"

	"github.com/weftnet/weft/cniplugin"
)

// TestShippedConfListIsGenerated: the conflist the manifest and install.sh
// ship is byte for byte the one cniplugin.ConfList writes, so that the lab
// and the tests use the configuration nodes get.
func TestShippedConfListIsGenerated(t *testing.T) {
	shipped, err := os.ReadFile("cni/10-flannel.conflist")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := cniplugin.ConfList{Name: "cbr0", CNIVersion: "1.0.0"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(gen) != string(shipped) {
		t.Errorf("cni/10-flannel.conflist:\n%s\ncniplugin.ConfList writes:\n%s", shipped, gen)
	}
}
