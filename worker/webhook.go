package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/worker/task"
)

// handleWebhook delivers one event to one endpoint (webhook.Sender: signed,
// 10 s at most, no redirects, no private addresses unless allowed). An
// answer of 5xx, 408 or 429, a timeout or a connection error is tried
// again on the webhook schedule (WebhookRetryDelay), up to
// task.WebhookMaxRetry times (about a day), then archived; any other
// refusal (4xx, 3xx, a blocked address, an endpoint no longer configured)
// is archived at once with the status in the error. Delivery is
// at-least-once: a receiver that answered too late for dab gets the event
// again, and receivers dedupe by the webhook-id header.
func (w *Worker) handleWebhook(ctx context.Context, t *asynq.Task) error {
	p, eventID, eventType, err := task.DecodeWebhook(t.Payload())
	if err != nil {
		return err
	}
	taskID, _ := asynq.GetTaskID(ctx)
	if w.deps.Webhooks == nil {
		w.countWebhook("retry")
		return fmt.Errorf("webhook delivery %s: this worker has no endpoints (its DAB_WEBHOOKS_FILE is not set): give every worker the same DAB_WEBHOOKS_FILE; the delivery is tried again later", taskID)
	}
	d, err := w.deps.Webhooks.Send(ctx, p.Endpoint, eventID, p.Event)
	if errors.Is(err, webhook.ErrPermanent) {
		w.countWebhook("failed")
		return fmt.Errorf("webhook delivery of event %s: %w: %w", eventID, err, asynq.SkipRetry)
	}
	if err != nil {
		w.countWebhook("retry")
		return fmt.Errorf("webhook delivery of event %s: %w", eventID, err)
	}
	w.countWebhook("delivered")
	b, _ := json.Marshal(d)
	if rw := t.ResultWriter(); rw != nil {
		if _, err := rw.Write(b); err != nil {
			return fmt.Errorf("webhook delivery %s: write task result: %w", taskID, err)
		}
	}
	w.log.Info("webhook.delivered", "task_id", taskID, "event_id", eventID, "event_type", eventType,
		"endpoint", d.Endpoint, "status", d.Status, "duration_ms", d.Duration.Milliseconds())
	return nil
}

func (w *Worker) countWebhook(result string) {
	if w.metrics != nil {
		w.metrics.Webhooks.WithLabelValues(result).Inc()
	}
}

// WebhookRetryDelay is the webhook schedule: the delay before the retry
// that follows retried failures. 5 s, 30 s, 2 min, 5 min, 15 min, 30 min,
// 1 h, 2 h, 4 h, 8 h, 8 h (task.WebhookMaxRetry retries, about a day in
// all), each ±10% so that deliveries that failed together (a receiver's
// outage) do not all come back at once.
func WebhookRetryDelay(retried int) time.Duration {
	schedule := [...]time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 5 * time.Minute, 15 * time.Minute,
		30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 8 * time.Hour}
	d := schedule[max(0, min(retried, len(schedule)-1))]
	return d - d/10 + rand.N(d/5+1)
}

// webhookRetryDelay is delay(retried), or longer when the receiver asked
// for more time (Retry-After, honoured up to an hour).
func webhookRetryDelay(delay func(int) time.Duration, retried int, err error) time.Duration {
	d := delay(retried)
	var ra *webhook.RetryAfterError
	if errors.As(err, &ra) {
		d = max(d, min(ra.After, time.Hour))
	}
	return d
}
