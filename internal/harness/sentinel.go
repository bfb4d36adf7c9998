package harness

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/localsvc"
)

// SentinelGroup is a Redis master, one replica and three sentinels that
// watch the master: the smallest group that fails over on its own.
type SentinelGroup struct {
	MasterName string
	Master     *localsvc.Redis
	Replica    *localsvc.Redis
	Sentinels  []*localsvc.Sentinel
}

// The group's failure detection is quick so that a test's failover takes
// seconds: a master is down after DownAfter without an answer.
const (
	sentinelDownAfter       = 1500 * time.Millisecond
	sentinelFailoverTimeout = 10 * time.Second
)

// StartSentinelGroup starts a master (with an append-only file), a replica
// in sync with it, and three sentinels (quorum 2) that know both, and
// stops them when the test ends.
func StartSentinelGroup(t testing.TB) *SentinelGroup {
	t.Helper()
	g := &SentinelGroup{MasterName: "dab-" + randHex(3), Master: Redis(t)}
	g.Replica = RedisReplica(t, g.Master)
	for i := 0; i < 3; i++ {
		s, err := localsvc.StartSentinel(localsvc.SentinelOptions{
			Dir: t.TempDir(), MasterName: g.MasterName, MasterAddr: g.Master.Addr(),
			Quorum: 2, DownAfter: sentinelDownAfter, FailoverTimeout: sentinelFailoverTimeout,
		})
		if err != nil {
			if errors.Is(err, localsvc.ErrNotInstalled) {
				t.Fatalf("integration tests need redis-server: %v", err)
			}
			t.Fatalf("start a sentinel: %v", err)
		}
		t.Cleanup(func() { s.Stop() })
		g.Sentinels = append(g.Sentinels, s)
	}
	// Failover needs every sentinel to know the replica and the other
	// sentinels (they learn both from the master within seconds).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range g.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
		err := waitFor(ctx, func() (bool, string, error) {
			replicas, err := c.Replicas(ctx, g.MasterName).Result()
			if err != nil {
				return false, "", err
			}
			peers, err := c.Sentinels(ctx, g.MasterName).Result()
			if err != nil {
				return false, "", err
			}
			return len(replicas) == 1 && len(peers) == 2, fmt.Sprintf("%d replicas, %d other sentinels", len(replicas), len(peers)), nil
		})
		c.Close()
		if err != nil {
			t.Fatalf("sentinel %s does not know the group: %v", s.Addr(), err)
		}
	}
	return g
}

// URL is DAB_REDIS_URL for DAB_REDIS_MODE=sentinel: every sentinel and the
// master's name.
func (g *SentinelGroup) URL() string {
	q := url.Values{"master_name": {g.MasterName}}
	for _, s := range g.Sentinels[1:] {
		q.Add("addr", s.Addr())
	}
	return "redis://" + g.Sentinels[0].Addr() + "/0?" + q.Encode()
}

// WaitFailover waits until every sentinel names the replica as the master
// and the replica answers as one.
func (g *SentinelGroup) WaitFailover(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, s := range g.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
		err := waitFor(ctx, func() (bool, string, error) {
			addr, err := c.GetMasterAddrByName(ctx, g.MasterName).Result()
			if err != nil {
				return false, "", err
			}
			got := strings.Join(addr, ":")
			return got == g.Replica.Addr(), "master " + got, nil
		})
		c.Close()
		if err != nil {
			t.Fatalf("sentinel %s did not fail over to %s: %v", s.Addr(), g.Replica.Addr(), err)
		}
	}
	r := redis.NewClient(&redis.Options{Addr: g.Replica.Addr()})
	defer r.Close()
	err := waitFor(ctx, func() (bool, string, error) {
		info, err := r.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master"), "not master yet", err
	})
	if err != nil {
		t.Fatalf("replica %s did not become the master: %v", g.Replica.Addr(), err)
	}
}

// waitFor calls check every 50ms until it reports done or ctx ends; the
// error then carries check's last note and error.
func waitFor(ctx context.Context, check func() (done bool, note string, err error)) error {
	for {
		done, note, err := check()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: last seen: %s %v", ctx.Err(), note, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
