package lab

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

// HostRow is one line of the hosts table.
type HostRow struct {
	Host     string
	Underlay string
	Subnet   string
	Weftd    string
	Pods     []string // "host1-pod1 10.244.3.2"
}

// hostRows builds the hosts table of st from its state, each host's
// subnet.env and the liveness of its weftd.
func hostRows(st *State) []HostRow {
	subnets := subnetsFromEnv(st)
	var rows []HostRow
	for _, h := range st.Hosts {
		r := HostRow{Host: h.Name, Underlay: h.Addr.String(), Subnet: "-", Weftd: "not started"}
		if s, ok := subnets[h.Name]; ok && s != "" {
			r.Subnet = s
		}
		if h.Addr6.IsValid() {
			r.Underlay += " " + h.Addr6.String()
		}
		for _, p := range st.Procs {
			if p.Name == h.Name {
				r.Weftd = "pid " + strconv.Itoa(p.PID) + " dead"
				if ownsProcess(p.PID, st.StateDir) {
					r.Weftd = "pid " + strconv.Itoa(p.PID) + " running"
				}
			}
		}
		for _, p := range h.Pods {
			a := "-"
			if p.Addr.IsValid() {
				a = p.Addr.Addr().String()
			}
			if p.Addr6.IsValid() {
				a = strings.TrimPrefix(a+" "+p.Addr6.Addr().String(), "- ")
			}
			r.Pods = append(r.Pods, shortName(p.Name)+" "+a)
		}
		rows = append(rows, r)
	}
	return rows
}

// RenderHosts writes the hosts table: host, underlay address, leased
// subnet, weftd process and pod addresses.
func RenderHosts(w io.Writer, rows []HostRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tUNDERLAY\tSUBNET\tWEFTD\tPODS")
	for _, r := range rows {
		pods := strings.Join(r.Pods, ", ")
		if pods == "" {
			pods = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Host, r.Underlay, r.Subnet, r.Weftd, pods)
	}
	return tw.Flush()
}

// RenderHints says how to look around the lab.
func RenderHints(w io.Writer, st *State) error {
	var b strings.Builder
	fmt.Fprintf(&b, "look around:\n")
	if len(st.Hosts) > 0 {
		h := st.Hosts[0]
		fmt.Fprintf(&b, "  ip netns exec %s ip route                # host1's routes to the other hosts' subnets\n", h.NS)
		if st.Backend == "vxlan" {
			if !st.NoIPv4 {
				fmt.Fprintf(&b, "  ip netns exec %s bridge fdb show dev flannel.1\n", h.NS)
			}
			if st.IPv6Network.IsValid() {
				fmt.Fprintf(&b, "  ip netns exec %s bridge fdb show dev flannel-v6.1\n", h.NS)
			}
		}
		fmt.Fprintf(&b, "  cat %s\n", h.SubnetFile)
		fmt.Fprintf(&b, "  less %s/weftd.log\n", h.DataDir)
		if len(h.Pods) > 0 && len(st.Hosts) > 1 && len(st.Hosts[1].Pods) > 0 && st.Hosts[1].Pods[0].Addr.IsValid() {
			fmt.Fprintf(&b, "  ip netns exec %s ping %s\n", h.Pods[0].NS, st.Hosts[1].Pods[0].Addr.Addr())
		}
	}
	if st.Kube != nil {
		fmt.Fprintf(&b, "  %s leases --kube-subnet-mgr --kubeconfig-file %s --net-config-path %s\n", tool(st, "weft"), st.Kube.Kubeconfig, st.Kube.NetConf)
		fmt.Fprintf(&b, "  KUBECONFIG=%s kubectl get nodes -o wide   # if you have kubectl\n", st.Kube.Kubeconfig)
	} else {
		fmt.Fprintf(&b, "  %s --endpoints http://127.0.0.1:%d get --prefix %s\n", tool(st, "etcdctl"), st.EtcdPort, EtcdPrefix)
		fmt.Fprintf(&b, "  %s leases --etcd-endpoints http://127.0.0.1:%d\n", tool(st, "weft"), st.EtcdPort)
	}
	flags := ""
	if st.StateDir != DefaultStateDir || st.Prefix != DefaultPrefix {
		flags = " --state-dir " + st.StateDir + " --prefix " + st.Prefix
	}
	weft := tool(st, "weft")
	fmt.Fprintf(&b, "  %s lab status%s        # hosts, processes, leases\n", weft, flags)
	fmt.Fprintf(&b, "  %s lab check%s         # the ping matrix again\n", weft, flags)
	fmt.Fprintf(&b, "  %s lab doctor host1%s  # weft doctor inside host1: what is wrong and how to fix it (--peers probes the others)\n", weft, flags)
	fmt.Fprintf(&b, "  %s lab down%s          # remove everything the lab made\n", weft, flags)
	_, err := io.WriteString(w, b.String())
	return err
}

// tool names a program for the hints: its path in the lab's binary
// directory when it is there (make builds weft and etcdctl into bin/),
// else its bare name, for $PATH.
func tool(st *State, name string) string {
	if st.BinDir != "" {
		p := filepath.Join(st.BinDir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name
}
