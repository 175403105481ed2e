package logonce

import (
	"errors"
	"testing"
)

func TestErrors(t *testing.T) {
	var e Errors
	a, b := errors.New("etcd unreachable"), errors.New("no free subnet")
	steps := []struct {
		name string
		do   func() bool
		want bool
	}{
		{"no failure to clear", e.Cleared, false},
		{"first failure", func() bool { return e.Changed(a) }, true},
		{"same again", func() bool { return e.Changed(a) }, false},
		{"same text, new error value", func() bool { return e.Changed(errors.New("etcd unreachable")) }, false},
		{"another failure", func() bool { return e.Changed(b) }, true},
		{"back to the first", func() bool { return e.Changed(a) }, true},
		{"recovered", e.Cleared, true},
		{"recovered twice", e.Cleared, false},
		{"first failure after recovery", func() bool { return e.Changed(a) }, true},
		{"empty key is a failure too", func() bool { return e.ChangedKey("") }, true},
		{"empty key again", func() bool { return e.ChangedKey("") }, false},
		{"cleared after an empty key", e.Cleared, true},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
}
