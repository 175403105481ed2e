package procstat

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     State
		bad      bool
	}{
		{name: "plain", in: "1234 (weftd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0\n", want: 'S'},
		{name: "name with spaces and parens", in: "7 (a) b (c) Z 1 7 7 0 -1\n", want: 'Z'},
		{name: "no paren", in: "7 weftd S 1", bad: true},
		{name: "nothing after the state", in: "7 (x) S", bad: true},
		{name: "state not one letter", in: "7 (x) SS 1 7", bad: true},
		{name: "empty", in: "", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseState([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("ParseState(%q) = %q, %v; want ErrMalformed", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseState(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseState(b); err == nil && s == 0 {
			t.Errorf("ParseState(%q) gave no state and no error", b)
		}
	})
}

// TestAlive follows a child from running through exited (a zombie until it
// is reaped) to gone.
func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !Alive(pid) {
		t.Fatalf("child %d not alive", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still alive 10 s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s, err := ReadState(pid); err != nil || !s.Exited() {
		t.Errorf("unreaped child: %q, %v; want a zombie", s, err)
	}
	_ = cmd.Wait()
	if Alive(pid) {
		t.Errorf("reaped child %d reported alive", pid)
	}
}
