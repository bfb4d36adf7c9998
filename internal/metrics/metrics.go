// Package metrics holds dab's Prometheus metrics. One Metrics per process;
// the parts that do the work (worker, watcher) record into it, and /metrics
// serves its registry together with asynq's queue collector.
package metrics

import (
	"net/http"
	"os"
	"regexp"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the counters dab keeps.
type Metrics struct {
	Registry *prometheus.Registry

	Uploads        *prometheus.CounterVec // result: uploaded, existed, failed
	UploadFailures *prometheus.CounterVec // reason: the failure code
	UploadBytes    prometheus.Counter
	UploadSeconds  prometheus.Histogram
	S3Errors       *prometheus.CounterVec // code
	Purchases      *prometheus.CounterVec // outcome: succeeded, or the rejection reason
	// Requeued counts spool entries whose task was gone from Redis and
	// that were queued again.
	Requeued prometheus.Counter
	// Webhooks counts delivery attempts, by result: delivered, retry (tried
	// again later), failed (archived at once).
	Webhooks *prometheus.CounterVec
}

// New registers dab's metrics and the Go runtime's in a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Uploads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dab_uploads_total",
			Help: "Upload tasks finished, by result (uploaded, existed, failed)."}, []string{"result"}),
		UploadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dab_upload_failures_total",
			Help: "Upload task failures, by reason (S3 error code, Conflict, ...)."}, []string{"reason"}),
		UploadBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "dab_uploaded_bytes_total",
			Help: "Bytes uploaded to S3."}),
		UploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dab_upload_duration_seconds",
			Help: "Time of a successful upload task, spool to record.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12)}),
		S3Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dab_s3_errors_total",
			Help: "Errors from S3, by error code."}, []string{"code"}),
		Purchases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dab_purchases_total",
			Help: "Purchases applied, by outcome (succeeded or the rejection reason)."}, []string{"outcome"}),
		Requeued: prometheus.NewCounter(prometheus.CounterOpts{Name: "dab_spool_requeued_total",
			Help: "Spool entries whose upload task was gone from Redis (a lost or restored Redis), queued again."}),
		Webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dab_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by result (delivered, retry, failed)."}, []string{"result"}),
	}
	m.Registry.MustRegister(m.Uploads, m.UploadFailures, m.UploadBytes, m.UploadSeconds, m.S3Errors, m.Purchases, m.Requeued, m.Webhooks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchStats are the watcher's counters (the watcher keeps them; metrics
// reads them when scraped).
type WatchStats struct {
	Detected, Claimed, Enqueued, Failed, Rescans, Overflows, EnqueueErrors int64
}

// RegisterWatcher exposes a watcher's counters and problems.
func (m *Metrics) RegisterWatcher(stats func() WatchStats, problems func() int) {
	counter := func(name, help string, get func(WatchStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(get(stats())) })
	}
	m.Registry.MustRegister(
		counter("dab_watcher_files_detected_total", "Files seen in the drop folder.", func(s WatchStats) int64 { return s.Detected }),
		counter("dab_watcher_files_claimed_total", "Files claimed into the spool.", func(s WatchStats) int64 { return s.Claimed }),
		counter("dab_watcher_files_queued_total", "Upload tasks queued by the watcher.", func(s WatchStats) int64 { return s.Enqueued }),
		counter("dab_watcher_files_failed_total", "Files moved to the failed folder by the watcher (bad names).", func(s WatchStats) int64 { return s.Failed }),
		counter("dab_watcher_rescans_total", "Full rescans of the drop folder completed.", func(s WatchStats) int64 { return s.Rescans }),
		counter("dab_watcher_overflows_total", "File event overflows (events lost, rescanned).", func(s WatchStats) int64 { return s.Overflows }),
		counter("dab_watcher_enqueue_errors_total", "Failed attempts to queue an upload.", func(s WatchStats) int64 { return s.EnqueueErrors }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dab_watcher_problems", Help: "Drop-folder problems needing a person (unknown type folders, symlinks, ...)."},
			func() float64 { return float64(problems()) }),
	)
}

var entryID = regexp.MustCompile(`^[0-9a-f]{28}$`)

// RegisterSpool exposes the number of entries waiting in a spool folder.
func (m *Metrics) RegisterSpool(dir string) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dab_spool_entries",
		Help: "Files in the spool: spooled and not yet uploaded, or failed for a reason an operator can fix."},
		func() float64 {
			des, err := os.ReadDir(dir)
			if err != nil {
				return 0
			}
			n := 0
			for _, de := range des {
				if entryID.MatchString(de.Name()) {
					n++
				}
			}
			return float64(n)
		}))
}

// RegisterQueues adds asynq's queue collector (sizes, states, latency).
func (m *Metrics) RegisterQueues(insp *asynq.Inspector) {
	m.Registry.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
