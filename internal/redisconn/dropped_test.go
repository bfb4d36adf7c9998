package redisconn

import (
	"context"
	"sync"
	"testing"

	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/localsvc"
)

// Connections the server dropped while they sat in the pool (a restart,
// CLIENT KILL by an operator or by Redis itself, a proxy) fail no command:
// go-redis looks at a pooled connection before it uses it. (Skipping that
// look for connections that had just read, to save its system call, made
// commands fail with EOF here: each retry took another dead connection.)
func TestDroppedConnectionsFailNoCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		drop func(t *testing.T, r *localsvc.Redis)
	}{
		{"restart", func(t *testing.T, r *localsvc.Redis) {
			if err := r.Restart(); err != nil {
				t.Fatal(err)
			}
		}},
		{"client kill", func(t *testing.T, r *localsvc.Redis) {
			admin := harness.RedisClient(t, r)
			if err := admin.Do(context.Background(), "client", "kill", "type", "normal", "skipme", "yes").Err(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := harness.Redis(t)
			c, _, err := Open(Options{URL: r.URL()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			for round := 0; round < 5; round++ {
				// Many connections in the pool, each having just read.
				var wg sync.WaitGroup
				for i := 0; i < 32; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := 0; j < 5; j++ {
							if err := c.Incr(ctx, "n").Err(); err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				tc.drop(t, r)
				for i := 0; i < 20; i++ {
					if err := c.Incr(ctx, "n").Err(); err != nil {
						t.Fatalf("round %d, command %d after the %s: %v", round, i, tc.name, err)
					}
				}
			}
		})
	}
}
