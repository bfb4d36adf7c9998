package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/worker/task"
)

// WebhookGroup is the consumer group on the events stream through which
// the dispatchers of every `dab work` share the events: each event goes to
// one of them.
const WebhookGroup = "webhooks"

// Dispatcher defaults.
const (
	// DispatchBlockDefault is how long one read waits for new events.
	DispatchBlockDefault = 2 * time.Second
	// DispatchClaimIdleDefault: events a dispatcher read and did not
	// acknowledge for this long (it crashed, or Redis refused its tasks)
	// are taken over by another.
	DispatchClaimIdleDefault = time.Minute
	// DispatchClaimEveryDefault is how often a dispatcher looks for such
	// events.
	DispatchClaimEveryDefault = 15 * time.Second
	// DispatchBatch is the most events one read takes.
	DispatchBatch = 100
)

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	// Prefix is the key prefix of the events stream (DAB_KEY_PREFIX).
	Prefix string
	// Endpoints receive the events (required: a dispatcher without
	// endpoints has nothing to do).
	Endpoints []webhook.Endpoint
	// Queue enqueues the deliveries (required).
	Queue task.Enqueuer
	// Consumer names this dispatcher in the group; default: host name,
	// process ID and a random suffix.
	Consumer string
	Logger   *slog.Logger
	// Block, ClaimIdle and ClaimEvery default to DispatchBlockDefault,
	// DispatchClaimIdleDefault and DispatchClaimEveryDefault.
	Block, ClaimIdle, ClaimEvery time.Duration
}

// Dispatcher turns events into webhook deliveries: it reads the events
// stream through the consumer group WebhookGroup (XREADGROUP ... BLOCK),
// queues one dab:webhook task per event and matching endpoint (task ID
// task.WebhookTaskID, so an event seen twice is queued once) and
// acknowledges the event (XACK) only once its tasks are queued. Every
// ClaimEvery it takes over the events another dispatcher read and did not
// acknowledge within ClaimIdle (XAUTOCLAIM), and retries its own: a
// dispatcher that crashes between reading and acknowledging loses no
// event.
type Dispatcher struct {
	rdb       redis.UniversalClient
	stream    string
	cfg       DispatcherConfig
	endpoints []webhook.Endpoint
}

// NewDispatcher builds a dispatcher; Run starts it.
func NewDispatcher(rdb redis.UniversalClient, cfg DispatcherConfig) (*Dispatcher, error) {
	if len(cfg.Endpoints) == 0 || cfg.Queue == nil || cfg.Prefix == "" {
		return nil, errors.New("worker: a webhook dispatcher needs Prefix, Endpoints and Queue")
	}
	if cfg.Consumer == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		rand.Read(b)
		cfg.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Block <= 0 {
		cfg.Block = DispatchBlockDefault
	}
	if cfg.ClaimIdle <= 0 {
		cfg.ClaimIdle = DispatchClaimIdleDefault
	}
	if cfg.ClaimEvery <= 0 {
		cfg.ClaimEvery = DispatchClaimEveryDefault
	}
	return &Dispatcher{rdb: rdb, stream: event.Keys{Prefix: cfg.Prefix}.Stream(), cfg: cfg, endpoints: cfg.Endpoints}, nil
}

// Prepare creates the consumer group unless it exists. A new group starts
// at the stream's end ("$"): webhooks receive the events written from the
// moment dab first runs with endpoints, not the history before.
func (d *Dispatcher) Prepare(ctx context.Context) error {
	err := d.rdb.XGroupCreateMkStream(ctx, d.stream, WebhookGroup, "$").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("webhooks: create the consumer group %s on %s: %w", WebhookGroup, d.stream, err)
	}
	return nil
}

// Run dispatches until ctx ends. Redis errors are logged and retried with
// back-off; Run returns nil when ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	log := d.cfg.Logger.With("component", "webhooks", "consumer", d.cfg.Consumer)
	pause := func(wait *time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(*wait):
		}
		*wait = min(2**wait, 30*time.Second)
	}
	wait := time.Second
	for ctx.Err() == nil {
		err := d.Prepare(ctx)
		if err == nil {
			break
		}
		log.Warn("webhooks.prepare_failed", "error", err.Error(), "note", "retrying")
		pause(&wait)
	}
	log.Info("webhooks.dispatching", "endpoints", len(d.endpoints), "stream", d.stream, "group", WebhookGroup)
	var lastClaim time.Time
	wait = time.Second
	for ctx.Err() == nil {
		if time.Since(lastClaim) >= d.cfg.ClaimEvery {
			if n, err := d.Recover(ctx); err != nil && ctx.Err() == nil {
				log.Warn("webhooks.recover_failed", "error", err.Error())
			} else if n > 0 {
				log.Info("webhooks.recovered", "events", n, "note", "events read but not acknowledged (a dispatcher crashed, or Redis refused tasks) are dispatched now")
			}
			lastClaim = time.Now()
		}
		if _, err := d.Read(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			log.Warn("webhooks.read_failed", "error", err.Error(), "note", "retrying")
			pause(&wait)
			continue
		}
		wait = time.Second
	}
	log.Info("webhooks.stopped")
	return nil
}

// Read waits up to Block for new events and dispatches them; it returns
// how many it dispatched.
func (d *Dispatcher) Read(ctx context.Context) (int, error) {
	streams, err := d.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: WebhookGroup, Consumer: d.cfg.Consumer,
		Streams: []string{d.stream, ">"}, Count: DispatchBatch, Block: d.cfg.Block}).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("webhooks: read events: %w", err)
	}
	n := 0
	for _, s := range streams {
		m, err := d.dispatch(ctx, s.Messages)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Recover dispatches the events this dispatcher read and did not
// acknowledge, then those of others idle for ClaimIdle (XAUTOCLAIM), and
// forgets consumers that left nothing pending for a day. It returns how
// many events it dispatched.
func (d *Dispatcher) Recover(ctx context.Context) (int, error) {
	total := 0
	// Its own: read from ID 0 returns this consumer's pending entries.
	for start := "0"; ; {
		streams, err := d.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: WebhookGroup, Consumer: d.cfg.Consumer,
			Streams: []string{d.stream, start}, Count: DispatchBatch, Block: -1}).Result() // -1: no BLOCK (history never waits)
		if err != nil && !errors.Is(err, redis.Nil) {
			return total, fmt.Errorf("webhooks: read pending events: %w", err)
		}
		if len(streams) == 0 || len(streams[0].Messages) == 0 {
			break
		}
		msgs := streams[0].Messages
		n, err := d.dispatch(ctx, msgs)
		total += n
		if err != nil {
			return total, err
		}
		start = msgs[len(msgs)-1].ID
	}
	// Others': claimed, then dispatched as this consumer's.
	for start := "0-0"; ; {
		msgs, next, err := d.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: d.stream, Group: WebhookGroup, Consumer: d.cfg.Consumer,
			MinIdle: d.cfg.ClaimIdle, Start: start, Count: DispatchBatch}).Result()
		if err != nil {
			return total, fmt.Errorf("webhooks: claim pending events: %w", err)
		}
		n, err := d.dispatch(ctx, msgs)
		total += n
		if err != nil {
			return total, err
		}
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	consumers, err := d.rdb.XInfoConsumers(ctx, d.stream, WebhookGroup).Result()
	if err != nil {
		return total, fmt.Errorf("webhooks: list consumers: %w", err)
	}
	for _, c := range consumers {
		if c.Name != d.cfg.Consumer && c.Pending == 0 && c.Idle > 24*time.Hour {
			d.rdb.XGroupDelConsumer(ctx, d.stream, WebhookGroup, c.Name)
		}
	}
	return total, nil
}

// dispatch queues the deliveries of msgs and acknowledges each event whose
// deliveries are queued. An event trimmed from the stream before it was
// dispatched (it comes back without fields) or not written by dab is
// acknowledged with an error in the log: it cannot be delivered.
func (d *Dispatcher) dispatch(ctx context.Context, msgs []redis.XMessage) (int, error) {
	var done []string
	defer func() {
		if len(done) > 0 {
			d.rdb.XAck(context.WithoutCancel(ctx), d.stream, WebhookGroup, done...)
		}
	}()
	n := 0
	for _, m := range msgs {
		ev, _, err := event.FromMessage(m)
		if err != nil {
			d.cfg.Logger.Error("webhooks.event_lost", "event_id", m.ID, "error", err.Error(),
				"note", "the event was trimmed from the stream (DAB_EVENTS_MAXLEN, DAB_EVENTS_MAX_AGE) before it was dispatched, or not written by dab: it is not delivered")
			done = append(done, m.ID)
			continue
		}
		body, err := ev.JSON()
		if err != nil {
			return n, fmt.Errorf("webhooks: encode event %s: %w", m.ID, err)
		}
		for _, ep := range d.endpoints {
			if !ep.Receives(ev.Type) {
				continue
			}
			t, err := task.NewWebhook(task.WebhookPayload{Endpoint: ep.ID, Event: body})
			if err != nil {
				return n, fmt.Errorf("webhooks: event %s: %w", m.ID, err)
			}
			if _, err := d.cfg.Queue.EnqueueContext(ctx, t); err != nil && !task.IsAlreadyQueued(err) {
				return n, fmt.Errorf("webhooks: queue the delivery of event %s to %s: %w", m.ID, ep, err)
			}
		}
		done = append(done, m.ID)
		n++
	}
	return n, nil
}
