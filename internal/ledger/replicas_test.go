package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
	"github.com/dab-assets/dab/internal/harness"
	"github.com/dab-assets/dab/internal/ledger"
	"github.com/dab-assets/dab/internal/localsvc"
)

// replicaBundle is a master with one real replica.
type replicaBundle struct {
	*bundle
	replica    *localsvc.Redis
	replicaRdb *redis.Client
}

func setupReplica(t *testing.T) *replicaBundle {
	t.Helper()
	master := harness.Redis(t)
	rdb := harness.RedisClient(t, master)
	replica := harness.RedisReplica(t, master)
	return &replicaBundle{
		bundle:  &bundle{rdb: rdb, assets: asset.NewStore(rdb, "dab:"), led: ledger.New(rdb, "dab:", "house")},
		replica: replica, replicaRdb: harness.RedisClient(t, replica),
	}
}

// store is the ledger on the master, waiting for n replicas.
func (b *replicaBundle) store(n int, timeout time.Duration) *ledger.Store {
	return ledger.NewWithOptions(b.rdb, "dab:", "house", ledger.Options{MinReplicas: n, ReplicaTimeout: timeout})
}

// onReplica reads a purchase's hash on the replica.
func (b *replicaBundle) onReplica(t *testing.T, purchaseID string) map[string]string {
	t.Helper()
	m, err := b.replicaRdb.HGetAll(context.Background(), b.led.Keys().Purchase(purchaseID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMinReplicasMetWritesSucceed(t *testing.T) {
	t.Parallel()
	b := setupReplica(t)
	ctx := context.Background()
	led := b.store(1, 5*time.Second)
	id := b.newAsset(t, "a.txt", "")
	if _, err := led.SetPrice(ctx, id, 30, "test"); err != nil {
		t.Fatalf("set price with one replica: %v", err)
	}
	if g, err := led.Grant(ctx, "g-1", "alice", 100); err != nil || g.Balance != 100 {
		t.Fatalf("grant with one replica: %+v %v", g, err)
	}
	p := ledger.PurchaseRequest{PurchaseID: "p-1", AssetID: id, BuyerID: "alice", Credits: 30}
	if _, _, err := led.Accept(ctx, p); err != nil {
		t.Fatal(err)
	}
	r, err := led.Apply(ctx, p)
	if err != nil || r.Status != ledger.StatusSucceeded {
		t.Fatalf("apply with one replica: %+v %v", r, err)
	}
	if got, err := led.GetPurchase(ctx, "p-1"); err != nil || got.Status != ledger.StatusSucceeded || got.EntryID != r.EntryID {
		t.Fatalf("GetPurchase = %+v %v, want succeeded", got, err)
	}
	// WAIT answered: the replica has the result, without the mark.
	if m := b.onReplica(t, "p-1"); m["status"] != ledger.StatusSucceeded || m["unreplicated"] != "" {
		t.Fatalf("replica's purchase hash = %v", m)
	}
	if bal, err := b.replicaRdb.HGet(ctx, b.led.Keys().Balances(), "alice").Result(); err != nil || bal != "70" {
		t.Fatalf("replica's balance of alice = %q %v, want 70", bal, err)
	}
	b.verify(t)
}

// checkNotReplicated fails unless err is ErrNotReplicated, returned within
// about the timeout.
func checkNotReplicated(t *testing.T, what string, err error, took, timeout time.Duration) {
	t.Helper()
	if !errors.Is(err, ledger.ErrNotReplicated) {
		t.Fatalf("%s: err = %v, want ErrNotReplicated", what, err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Fatalf("%s: answered after %s, want about the timeout (%s)", what, took, timeout)
	}
}

func timed[T any](f func() (T, error)) (T, error, time.Duration) {
	start := time.Now()
	v, err := f()
	return v, err, time.Since(start)
}

func TestMoreReplicasThanThereAreStaysPending(t *testing.T) {
	t.Parallel()
	b := setupReplica(t)
	ctx := context.Background()
	const timeout = 300 * time.Millisecond
	led := b.store(2, timeout) // one replica runs
	id := b.newAsset(t, "a.txt", "30")

	_, err, took := timed(func() (ledger.GrantResult, error) { return led.Grant(ctx, "g-1", "alice", 100) })
	checkNotReplicated(t, "grant", err, took, timeout)
	// Applied on the master, once, however often it is repeated.
	_, err, took = timed(func() (ledger.GrantResult, error) { return led.Grant(ctx, "g-1", "alice", 100) })
	checkNotReplicated(t, "repeated grant", err, took, timeout)
	if bal := b.balance(t, "alice"); bal != 100 {
		t.Fatalf("alice has %d, want 100 (granted once)", bal)
	}

	p := ledger.PurchaseRequest{PurchaseID: "p-1", AssetID: id, BuyerID: "alice", Credits: 30}
	if _, _, err := led.Accept(ctx, p); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, err, took = timed(func() (ledger.PurchaseResult, error) { return led.Apply(ctx, p) })
		checkNotReplicated(t, "apply", err, took, timeout)
		// Applied on the master, but not reported done.
		got, err := led.GetPurchase(ctx, "p-1")
		if err != nil || got.Status != ledger.StatusPending || got.EntryID != "" {
			t.Fatalf("attempt %d: GetPurchase = %+v %v, want pending", i, got, err)
		}
		// Accepting it again (the client resends it) keeps it pending, so
		// the intake queues it again.
		if got, created, err := led.Accept(ctx, p); err != nil || created || got.Status != ledger.StatusPending {
			t.Fatalf("attempt %d: Accept = %+v %v %v, want pending", i, got, created, err)
		}
	}
	if bal := b.balance(t, "alice"); bal != 70 {
		t.Fatalf("alice has %d, want 70 (one purchase)", bal)
	}
	b.verify(t) // the books are sound: the mark only hides the status

	// With enough replicas the retry completes and reports the result.
	r, err := b.store(1, 5*time.Second).Apply(ctx, p)
	if err != nil || r.Status != ledger.StatusSucceeded {
		t.Fatalf("apply with one replica: %+v %v", r, err)
	}
	if got, err := led.GetPurchase(ctx, "p-1"); err != nil || got.Status != ledger.StatusSucceeded || got.EntryID != r.EntryID {
		t.Fatalf("GetPurchase = %+v %v, want succeeded", got, err)
	}
	if m := b.onReplica(t, "p-1"); m["status"] != ledger.StatusSucceeded || m["unreplicated"] != "" {
		t.Fatalf("replica's purchase hash = %v", m)
	}
	if bal := b.balance(t, "alice"); bal != 70 {
		t.Fatalf("alice has %d, want 70 (one purchase)", bal)
	}
	b.verify(t)
}

func TestReplicaDownThenBack(t *testing.T) {
	t.Parallel()
	b := setupReplica(t)
	ctx := context.Background()
	const timeout = 300 * time.Millisecond
	led := b.store(1, timeout)
	id := b.newAsset(t, "a.txt", "")
	b.grant(t, "alice", 100) // no wait

	if err := b.replica.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err, took := timed(func() (ledger.Offer, error) { return led.SetPrice(ctx, id, 30, "test") })
	checkNotReplicated(t, "set price", err, took, timeout)
	// A repeat writes nothing (the price is so already) and still waits
	// for the replica to have the first write.
	_, err, took = timed(func() (ledger.Offer, error) { return led.SetPrice(ctx, id, 30, "test") })
	checkNotReplicated(t, "repeated set price", err, took, timeout)
	p := ledger.PurchaseRequest{PurchaseID: "p-1", AssetID: id, BuyerID: "alice", Credits: 30}
	if _, _, err := led.Accept(ctx, p); err != nil {
		t.Fatal(err)
	}
	_, err, took = timed(func() (ledger.PurchaseResult, error) { return led.Apply(ctx, p) })
	checkNotReplicated(t, "apply", err, took, timeout)
	if got, err := led.GetPurchase(ctx, "p-1"); err != nil || got.Status != ledger.StatusPending {
		t.Fatalf("GetPurchase = %+v %v, want pending", got, err)
	}

	if err := b.replica.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitReplicaSynced(ctx, b.replica, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	r, err := led.Apply(ctx, p)
	if err != nil || r.Status != ledger.StatusSucceeded {
		t.Fatalf("apply after the replica came back: %+v %v", r, err)
	}
	if got, err := led.GetPurchase(ctx, "p-1"); err != nil || got.Status != ledger.StatusSucceeded {
		t.Fatalf("GetPurchase = %+v %v, want succeeded", got, err)
	}
	if m := b.onReplica(t, "p-1"); m["status"] != ledger.StatusSucceeded || m["unreplicated"] != "" {
		t.Fatalf("replica's purchase hash = %v", m)
	}
	b.verify(t)
}

func TestNewWithOptionsRefusesBadBounds(t *testing.T) {
	t.Parallel()
	for _, o := range []ledger.Options{{MinReplicas: -1}, {MinReplicas: ledger.MinReplicasMax + 1}, {MinReplicas: 1, ReplicaTimeout: ledger.ReplicaTimeoutMax + 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewWithOptions(%+v) did not panic", o)
				}
			}()
			ledger.NewWithOptions(nil, "dab:", "house", o)
		}()
	}
}
