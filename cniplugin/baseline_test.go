package cniplugin_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/weftnet/weft/cniplugin"
	"github.com/weftnet/weft/test/cnitest"
)

// TestDelegateConfListIsWhatFlannelRuns checks the baseline of
// BenchmarkAddDel: the bare conflist that cnitest.DelegateConfList derives
// holds exactly the delegate config that the flannel binary, run by libcni
// on the same host, generated and cached for a pod.
func TestDelegateConfListIsWhatFlannelRuns(t *testing.T) {
	h := cnitest.NewHost(t, binDir, cnitest.DefaultEnv())
	flannel := h.FlannelConfList(t, "1.0.0")
	pod := h.AddPod(t, flannel)
	t.Cleanup(func() {
		if err := h.Del(flannel, pod); err != nil {
			t.Errorf("DEL: %v", err)
		}
	})
	raw, err := os.ReadFile(filepath.Join(h.DataDir, pod.ContainerID))
	if err != nil {
		t.Fatal(err)
	}
	var ran map[string]any
	if err := json.Unmarshal(raw, &ran); err != nil {
		t.Fatalf("cache file: %v", err)
	}
	delete(ran, cniplugin.AttachmentKey)

	bare := h.DelegateConfList(t, flannel)
	if len(bare.Plugins) != 1 {
		t.Fatalf("bare conflist has %d plugins, want 1", len(bare.Plugins))
	}
	var derived map[string]any
	if err := json.Unmarshal(bare.Plugins[0].Bytes, &derived); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(derived, ran) {
		t.Errorf("derived delegate config\n%s\ndiffers from the one flannel ran\n%s", bare.Plugins[0].Bytes, raw)
	}
	if derived["type"] != "bridge" || bare.Name != flannel.Name || bare.CNIVersion != flannel.CNIVersion {
		t.Errorf("bare conflist %q %s runs %v; want bridge under %q %s", bare.Name, bare.CNIVersion, derived["type"], flannel.Name, flannel.CNIVersion)
	}
}
