package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client()
	if _, err := c.Put(ctx, "/k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	s.Stop()
	s.Restart()
	resp, err := c.Get(ctx, "/k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart got %v, want /k=v1", resp.Kvs)
	}
	if rev := s.Compact(ctx); rev < 2 {
		t.Errorf("Compact returned revision %d, want at least 2", rev)
	}
}

func TestTLSAndAuth(t *testing.T) {
	s := Start(t, WithTLS(NewCerts(t)), WithAuth("secret"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("put over TLS as root: %v", err)
	}
	cfg := s.ClientConfig()
	cfg.Password = "wrong"
	cfg.DialTimeout = 2 * time.Second
	if c, err := NewClientErr(cfg); err == nil {
		if _, err := c.Get(ctx, "/k"); err == nil {
			t.Errorf("get with a wrong password succeeded")
		}
		c.Close()
	}
}

func TestCluster(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client().Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	c.Members[0].Stop()
	if _, err := c.Client().Put(ctx, "/k", "v2"); err != nil {
		t.Fatalf("put with one member down: %v", err)
	}
}
