// Command flannel is the CNI meta-plugin: a drop-in for flannel's own, it
// configures bridge + host-local from the node's subnet.env. The logic is in
// package cniplugin.
package main

import "github.com/weftnet/weft/cniplugin"

func main() { cniplugin.Main(&cniplugin.Plugin{}) }
