package doctest

import (
	"reflect"
	"testing"
)

func TestTable(t *testing.T) {
	doc := "# Flags\n\n| Flag | Env |\n| --- | --- |\n| `-a` | `A` |\n|`-b`|  B |\n\nafter\n| Flag | Env |\n| `-c` | C |\n"
	want := [][]string{{"`-a`", "`A`"}, {"`-b`", "B"}}
	if got := Table(doc, "| Flag |"); !reflect.DeepEqual(got, want) {
		t.Errorf("Table = %q, want %q", got, want)
	}
	if got := Table(doc, "| Field |"); got != nil {
		t.Errorf("Table of a missing header = %q, want nil", got)
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"`-iface`", "-iface", true},
		{" `x` ", "x", true},
		{"`a` or `b`", "", false},
		{"plain", "", false},
		{"`", "", false},
	} {
		if got, ok := Code(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("Code(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
