package main

// When each record appears. A record's CreatedAt is the time its file was
// spooled, not the time it was recorded, so it cannot time the pipeline: the
// bench watches for the records themselves instead.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/asset"
)

const (
	pollEvery = 5 * time.Millisecond
	// pollBudget bounds the EXISTS of one poll, and while more records than
	// that are missing the poller checks them only every crowdedEvery: a
	// pipeline of 100,000 EXISTS every 5 ms would load the shared Redis
	// (and the CPUs dab runs on) more than dab does.
	pollBudget   = 256
	crowdedEvery = 50 * time.Millisecond
)

// recordPoller tells when each expected record appears. Every 5 ms it reads
// the run's record count (one ZCARD of its by-time index, which the record
// script writes with the record; the run's key prefix holds only the
// expected records) and, when the count says there are records it has not
// seen, sends one pipeline of EXISTS, one per record still missing: all of
// them once the count says they all exist, else up to pollBudget in a
// window that rotates over them (the watcher claims files in no particular
// order). A record's time is when the poll that saw it returned, at most a
// poll interval and a round trip late for the last record and for every
// record of a steady trickle; in a large backlog the counts tell the
// progress (see reached).
type recordPoller struct {
	rdb    *redis.Client
	keys   asset.Keys
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	all     []*expected // in the order they were expected
	missing []*expected // not seen yet, in the same order
	seen    int
	cursor  int      // start of the rotating window in missing
	growth  []sample // the record count each time it grew
	checked time.Time
	err     error
}

// sample is the record count at a time.
type sample struct {
	at time.Time
	n  int
}

// expected is one record the poller waits for.
type expected struct {
	recordKey string
	arrived   time.Time // when its file was handed to dab
	recorded  time.Time // when the poller saw its record
}

// startPoller polls the records of key prefix prefix until stop.
func startPoller(rdb *redis.Client, prefix string) *recordPoller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &recordPoller{rdb: rdb, keys: asset.Keys{Prefix: prefix}, cancel: cancel, done: make(chan struct{})}
	go p.run(ctx)
	return p
}

func (p *recordPoller) stop() {
	p.cancel()
	<-p.done
}

// expect adds the record of the object at s3Key, handed to dab at arrived.
func (p *recordPoller) expect(s3Key string, arrived time.Time) {
	e := &expected{recordKey: p.keys.Record(asset.ID(bucket, s3Key)), arrived: arrived}
	p.mu.Lock()
	p.all = append(p.all, e)
	p.missing = append(p.missing, e)
	p.mu.Unlock()
}

func (p *recordPoller) run(ctx context.Context) {
	defer close(p.done)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := p.poll(ctx); err != nil && ctx.Err() == nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
	}
}

func (p *recordPoller) poll(ctx context.Context) error {
	count, err := p.rdb.ZCard(ctx, p.keys.ByTime()).Result()
	if err != nil {
		return fmt.Errorf("poll records: %w", err)
	}
	now := time.Now()
	p.mu.Lock()
	if len(p.growth) == 0 || int(count) > p.growth[len(p.growth)-1].n {
		p.growth = append(p.growth, sample{now, int(count)})
	}
	if int(count) <= p.seen || len(p.missing) == 0 {
		p.mu.Unlock()
		return nil
	}
	var batch []*expected
	switch {
	case int(count)-p.seen >= len(p.missing): // every missing record exists
		batch = slices.Clone(p.missing)
	case len(p.missing) > pollBudget && now.Sub(p.checked) < crowdedEvery:
		p.mu.Unlock()
		return nil
	default:
		batch = p.batch()
	}
	p.checked = now
	p.mu.Unlock()

	cmds := make([]*redis.IntCmd, len(batch))
	if _, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, e := range batch {
			cmds[i] = pipe.Exists(ctx, e.recordKey)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("poll records: %w", err)
	}
	now = time.Now()

	p.mu.Lock()
	defer p.mu.Unlock()
	for i, e := range batch {
		if cmds[i].Val() == 1 {
			e.recorded = now
			p.seen++
		}
	}
	p.missing = slices.DeleteFunc(p.missing, func(e *expected) bool { return !e.recorded.IsZero() })
	return nil
}

// batch picks the records one poll checks (called with p.mu held).
func (p *recordPoller) batch() []*expected {
	if len(p.missing) <= pollBudget {
		return slices.Clone(p.missing)
	}
	out := make([]*expected, pollBudget)
	p.cursor %= len(p.missing)
	for i := range out {
		out[i] = p.missing[(p.cursor+i)%len(p.missing)]
	}
	p.cursor += pollBudget
	return out
}

// wait waits until every expected record was seen, failing if a server
// exits, ctx ends or timeout passes.
func (p *recordPoller) wait(ctx context.Context, timeout time.Duration, servers []*child) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		p.mu.Lock()
		left, total, err := len(p.missing), len(p.all), p.err
		p.mu.Unlock()
		switch {
		case err != nil:
			return err
		case left == 0:
			return nil
		}
		if err := anyExited(servers); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d records after %s", total-left, total, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// results are the expected records in the order they were expected; call
// it after wait.
func (p *recordPoller) results() []expected {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]expected, len(p.all))
	for i, e := range p.all {
		out[i] = *e
	}
	return out
}

// last is when the last record was seen.
func (p *recordPoller) last() time.Time {
	var t time.Time
	for _, e := range p.results() {
		if e.recorded.After(t) {
			t = e.recorded
		}
	}
	return t
}

// reached is when the poller first saw at least n records (zero if never).
func (p *recordPoller) reached(n int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.growth {
		if s.n >= n {
			return s.at
		}
	}
	return time.Time{}
}
