package iptables

import (
	"fmt"

	goipt "github.com/coreos/go-iptables/iptables"
)

// This file holds single-rule edits for callers that own one rule in a
// chain they share rather than a chain of their own (the lab's FORWARD
// rule), so that they need not import go-iptables.

// RuleEditor is the part of go-iptables' *iptables.IPTables that single-rule
// edits use; New returns one.
type RuleEditor interface {
	// List returns the chain as `iptables -t table -S chain` prints it.
	List(table, chain string) ([]string, error)
	// Exists reports whether the chain holds a rule matching rulespec.
	Exists(table, chain string, rulespec ...string) (bool, error)
	// Insert inserts a rule at position pos (1 is the top).
	Insert(table, chain string, pos int, rulespec ...string) error
	// Delete deletes the first rule of the chain matching rulespec.
	Delete(table, chain string, rulespec ...string) error
}

var _ RuleEditor = (*goipt.IPTables)(nil)

// InsertFirst inserts r at the top of its chain unless the chain holds it
// already.
func InsertFirst(ipt RuleEditor, r Rule) error {
	ok, err := ipt.Exists(r.Table, r.Chain, r.Spec...)
	if err != nil {
		return fmt.Errorf("checking iptables rule %s: %w", r, err)
	}
	if ok {
		return nil
	}
	if err := ipt.Insert(r.Table, r.Chain, 1, r.Spec...); err != nil {
		return fmt.Errorf("inserting iptables rule %s: %w", r, err)
	}
	return nil
}

// maxCopies bounds how many copies of one rule DeleteEvery removes.
const maxCopies = 10

// DeleteEvery deletes every copy of r (at most maxCopies); a missing rule
// is not an error.
func DeleteEvery(ipt RuleEditor, r Rule) error {
	for range maxCopies {
		ok, err := ipt.Exists(r.Table, r.Chain, r.Spec...)
		if err != nil {
			return fmt.Errorf("checking iptables rule %s: %w", r, err)
		}
		if !ok {
			return nil
		}
		if err := ipt.Delete(r.Table, r.Chain, r.Spec...); err != nil {
			return fmt.Errorf("deleting iptables rule %s: %w", r, err)
		}
	}
	return nil
}
