package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/dab-assets/dab/internal/event"
	"github.com/dab-assets/dab/internal/webhook"
	"github.com/dab-assets/dab/worker/task"
)

// WebhookAdmin is what the console shows and does for webhooks: the
// endpoints, each one's recent deliveries (asynq's tasks in queue
// webhooks) and sending an event again.
type WebhookAdmin struct {
	insp      *asynq.Inspector
	queue     task.Enqueuer
	events    *event.Log
	endpoints []webhook.Endpoint
}

// NewWebhookAdmin reads deliveries through insp, enqueues resends through
// queue and finds events in events.
func NewWebhookAdmin(insp *asynq.Inspector, queue task.Enqueuer, events *event.Log, endpoints []webhook.Endpoint) *WebhookAdmin {
	return &WebhookAdmin{insp: insp, queue: queue, events: events, endpoints: append([]webhook.Endpoint(nil), endpoints...)}
}

// Endpoints lists the endpoints in the file's order.
func (a *WebhookAdmin) Endpoints() []webhook.Endpoint {
	return append([]webhook.Endpoint(nil), a.endpoints...)
}

func (a *WebhookAdmin) endpoint(id string) (webhook.Endpoint, bool) {
	for _, e := range a.endpoints {
		if e.ID == id {
			return e, true
		}
	}
	return webhook.Endpoint{}, false
}

// deliveryListSize is how many tasks of each state Deliveries reads.
const deliveryListSize = 500

// Deliveries lists the newest deliveries to endpoint id (at most max),
// newest first: those waiting, running, waiting to be tried again, failed
// for good (archived) and done (kept task.DefaultRetention).
func (a *WebhookAdmin) Deliveries(ctx context.Context, id string, max int) ([]webhook.DeliveryInfo, error) {
	lists := []struct {
		state string
		list  func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	}{
		{"pending", a.insp.ListPendingTasks}, {"active", a.insp.ListActiveTasks}, {"scheduled", a.insp.ListScheduledTasks},
		{"retry", a.insp.ListRetryTasks}, {"archived", a.insp.ListArchivedTasks}, {"completed", a.insp.ListCompletedTasks},
	}
	var out []webhook.DeliveryInfo
	for _, l := range lists {
		tasks, err := l.list(task.QueueWebhooks, asynq.PageSize(deliveryListSize))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("webhooks: list %s deliveries: %w", l.state, err)
		}
		for _, t := range tasks {
			p, eventID, eventType, err := task.DecodeWebhook(t.Payload)
			if err != nil || p.Endpoint != id {
				continue
			}
			d := webhook.DeliveryInfo{TaskID: t.ID, EventID: eventID, EventType: eventType, State: l.state, Attempts: t.Retried,
				LastError: t.LastErr, At: t.NextProcessAt, Resend: strings.Contains(t.ID, resendMark)}
			switch l.state {
			case "completed":
				d.At, d.Attempts = t.CompletedAt, t.Retried+1
			case "archived":
				d.At, d.Attempts = t.LastFailedAt, t.Retried+1
			case "active":
				d.Attempts = t.Retried + 1
			}
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	if len(out) > max {
		out = out[:max]
	}
	return out, nil
}

// resendMark marks the task ID of a delivery sent again from the console.
const resendMark = "-resend-"

// ErrNoSuchEvent: a resend names an event that is neither in the stream
// nor in a delivery task.
var ErrNoSuchEvent = errors.New("no such event")

// Resend queues the delivery of event eventID to endpoint id again, with a
// new task ID (task.WebhookTaskID and a random suffix) so that it runs even
// while the first delivery's task is kept. The event comes from the
// stream, or, when it was trimmed, from its first delivery's task.
func (a *WebhookAdmin) Resend(ctx context.Context, id, eventID string) (string, error) {
	ep, ok := a.endpoint(id)
	if !ok {
		return "", fmt.Errorf("%w: endpoint %s is not in DAB_WEBHOOKS_FILE", webhook.ErrUnknownEndpoint, id)
	}
	if !event.ValidID(eventID) {
		return "", fmt.Errorf("%w: %q is not an event ID such as 1767225600000-0", ErrNoSuchEvent, clipText(eventID))
	}
	var body []byte
	ev, err := a.events.Get(ctx, eventID)
	switch {
	case err == nil:
		if body, err = ev.JSON(); err != nil {
			return "", err
		}
		if !ep.Receives(ev.Type) {
			return "", fmt.Errorf("%w: %s takes %s, not %s", ErrNoSuchEvent, ep, ep.TypesText(), ev.Type)
		}
	case errors.Is(err, event.ErrNotFound):
		info, terr := a.insp.GetTaskInfo(task.QueueWebhooks, task.WebhookTaskID(eventID, id))
		if terr != nil {
			return "", fmt.Errorf("%w: event %s is not in the stream any more (trimmed) and has no delivery task to %s", ErrNoSuchEvent, eventID, ep)
		}
		p, _, _, derr := task.DecodeWebhook(info.Payload)
		if derr != nil {
			return "", derr
		}
		body = p.Event
	default:
		return "", err
	}
	suffix := make([]byte, 6)
	rand.Read(suffix)
	taskID := task.WebhookTaskID(eventID, id) + resendMark + hex.EncodeToString(suffix)
	t, err := task.NewWebhook(task.WebhookPayload{Endpoint: id, Event: body}, asynq.TaskID(taskID))
	if err != nil {
		return "", err
	}
	if _, err := a.queue.EnqueueContext(ctx, t); err != nil {
		return "", fmt.Errorf("webhooks: queue the resend of event %s to %s: %w", eventID, ep, err)
	}
	return taskID, nil
}

func clipText(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
