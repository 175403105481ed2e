// Command flannel is the CNI meta-plugin: a drop-in for flannel's own, it
// configures bridge + host-local from the node's subnet.env. The logic is in
// package cniplugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/weftnet/weft/cniplugin"
)

func main() {
	p := &cniplugin.Plugin{}
	skel.PluginMainFuncs(p.Funcs(), cniplugin.Versions, cniplugin.About)
}
