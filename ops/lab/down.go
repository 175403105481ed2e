package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/kernel/netlinkx"
)

// Down removes the lab: it stops its processes (by recorded PID, and any
// process naming the state dir that the state lost, after checking each
// command line), deletes the pods' CNI attachments best-effort, every
// namespace, link and iptables rule recorded or carrying the lab's prefix,
// and the lab's files. It is safe to run twice and after a crashed Up.
func Down(ctx context.Context, o Options) error {
	n, err := o.check()
	if err != nil {
		return err
	}
	if _, err := os.Stat(o.StateDir); errors.Is(err, os.ErrNotExist) {
		// Nothing recorded; still sweep what carries the prefix.
		if err := sweep(ctx, n, &State{Prefix: n.Prefix, StateDir: o.StateDir}, o); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "no lab in %s; nothing carrying the prefix %q is left\n", o.StateDir, n.Prefix)
		return nil
	}
	lock, err := lockFile(o.StateDir, 10*time.Second)
	if err != nil {
		return err
	}
	defer lock.Close()
	st, err := LoadState(o.StateDir)
	if err != nil {
		if !errors.Is(err, ErrNoLab) {
			fmt.Fprintf(o.Out, "warning: %v; removing what carries the prefix %q\n", err, n.Prefix)
		}
		st = &State{Prefix: n.Prefix, StateDir: o.StateDir}
	}
	if st.Prefix != n.Prefix {
		return fmt.Errorf("the lab in %s has prefix %q, not %q", o.StateDir, st.Prefix, n.Prefix)
	}
	if err := sweep(ctx, n, st, o); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "lab %q removed\n", n.Prefix)
	return nil
}

// sweep removes the lab's objects in dependency order.
func sweep(ctx context.Context, n Names, st *State, o Options) error {
	var errs []error
	// 1. Processes: agents first, then etcd, then any the state lost.
	var agents, others []int
	for _, p := range st.Procs {
		if p.Name == "etcd" {
			others = append(others, p.PID)
		} else {
			agents = append(agents, p.PID)
		}
	}
	stopAll(agents, o.StateDir)
	stopAll(others, o.StateDir)
	stopAll(findProcesses(o.StateDir), o.StateDir)
	if left := findProcesses(o.StateDir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("lab processes still running: %v", left))
	}

	// 2. CNI attachments, best-effort: the namespaces go anyway, this
	// lets the plugins release what they hold.
	if st.BinDir != "" {
		var wg sync.WaitGroup
		for _, h := range st.Hosts {
			if !nsExists(h.NS) {
				continue
			}
			wg.Go(func() {
				hc, err := newHostCNI(h, st.BinDir)
				if err != nil {
					return
				}
				for _, p := range h.Pods {
					if p.Attached {
						dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						if err := hc.del(dctx, p); err != nil {
							fmt.Fprintf(o.Out, "warning: %v\n", err)
						}
						cancel()
					}
				}
			})
		}
		wg.Wait()
	}

	// 3. Namespaces: recorded ones and any carrying the prefix.
	nss := slices.Clone(st.Namespaces)
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range ents {
			if n.IsNS(e.Name()) && !slices.Contains(nss, e.Name()) {
				nss = append(nss, e.Name())
			}
		}
	}
	for _, ns := range nss {
		if !nsExists(ns) {
			continue
		}
		if out, err := exec.CommandContext(ctx, "ip", "netns", "delete", ns).CombinedOutput(); err != nil && nsExists(ns) {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}

	// 4. Links in the root namespace.
	if err := deleteLinks(n, st.Links); err != nil {
		errs = append(errs, err)
	}

	// 5. iptables rules.
	rules := slices.Clone(st.Rules)
	if found, err := labRules(n); err == nil {
		rules = append(rules, found...)
	} else if len(rules) > 0 {
		errs = append(errs, err)
	}
	for _, r := range rules {
		if err := deleteRule(r); err != nil {
			errs = append(errs, err)
		}
	}

	// 6. The neighbour table's thresholds, if the lab raised them.
	if err := restoreNeigh(st, o.Out); err != nil {
		errs = append(errs, fmt.Errorf("restoring the neighbour table's thresholds: %w", err))
	}

	// 7. Files: only those the lab writes, then the dir if empty.
	if err := removeFiles(o.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteLinks deletes the recorded links and any other link of the root
// namespace carrying the lab's prefix; a recorded name without the prefix is
// refused.
func deleteLinks(n Names, recorded []string) error {
	h, err := netlinkx.Open()
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	links := slices.Clone(recorded)
	if all, err := h.Links(); err == nil {
		for _, l := range all {
			if n.IsLink(l.Name) && !slices.Contains(links, l.Name) {
				links = append(links, l.Name)
			}
		}
	}
	for _, name := range links {
		if !n.IsLink(name) {
			errs = append(errs, fmt.Errorf("state names link %q, which does not carry the lab's prefix; left alone", name))
			continue
		}
		l, err := h.LinkByName(name)
		if err != nil {
			continue // gone (a veth goes with its peer's namespace)
		}
		if err := h.DeleteLink(l.Index); err != nil && !errors.Is(err, netlinkx.ErrNotFound) {
			errs = append(errs, fmt.Errorf("deleting link %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// stopAll stops the given lab processes in parallel.
func stopAll(pids []int, stateDir string) {
	var wg sync.WaitGroup
	for _, pid := range pids {
		wg.Go(func() { stopProcess(pid, stateDir, 3*time.Second) })
	}
	wg.Wait()
}

// labFile matches the names the lab creates directly in its state dir.
var labFile = regexp.MustCompile(`^(state\.json|lock|etcd|etcd\.log|host[0-9]+|kube|\.state\.json\.tmp-.*)$`)

// removeFiles removes the lab's files from dir, then dir itself if nothing
// else is left in it.
func removeFiles(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lab state dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if labFile.MatchString(e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("removing lab file: %w", err))
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing lab state dir (other files in it are left alone): %w", err))
	}
	return errors.Join(errs...)
}
