package cniplugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// staleBridgeMsg is the bridge plugin's wording when the bridge carries a
// gateway address other than the one FLANNEL_SUBNET gives it.
const staleBridgeMsg = "already has an IP address different from"

// explainStaleBridge adds, to the bridge plugin's "cni0 already has an IP
// address different from ..." error, why it happens and what to run: the
// node's subnet changed while the bridge kept the old gateway address. With
// no pod attached the bridge can go (the next ADD recreates it); otherwise
// the node is drained first. Other errors pass through unchanged.
func explainStaleBridge(err error, conf map[string]any, subnet string) error {
	var te *types.Error
	if !errors.As(err, &te) || !strings.Contains(te.Msg, staleBridgeMsg) {
		return err
	}
	bridge, _ := conf["bridge"].(string)
	if bridge == "" {
		bridge = "cni0"
	}
	fix := fmt.Sprintf("no pod is attached to %s: run `ip link delete %s` and retry (the next pod recreates it with %s)", bridge, bridge, subnet)
	if ents, derr := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif")); derr == nil && len(ents) > 0 {
		fix = fmt.Sprintf("pods are still attached to %s (%d) with addresses of the old subnet: drain the node, then run `ip link delete %s`", bridge, len(ents), bridge)
	}
	msg := fmt.Sprintf("%s (this node's subnet changed, FLANNEL_SUBNET is now %s, while %s kept the old gateway address; %s; `weft doctor` shows the details)", te.Msg, subnet, bridge, fix)
	return types.NewError(te.Code, msg, te.Details)
}
