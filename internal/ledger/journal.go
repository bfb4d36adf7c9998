package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// JournalObjects is where the journal goes: a bucket that never overwrites
// (storage.Store implements it).
type JournalObjects interface {
	// PutBytes stores body under key unless the key exists (If-None-Match:
	// *); existed=true when it held the same bytes already; an error when
	// it holds others.
	PutBytes(ctx context.Context, key string, body []byte, contentType string) (existed bool, err error)
	GetBytes(ctx context.Context, key string) ([]byte, error)
	// ListKeys calls fn with every key under prefix, in key order.
	ListKeys(ctx context.Context, prefix string, fn func(key string) error) error
}

// DefaultJournalPrefix is where the journal's objects go in the bucket.
const DefaultJournalPrefix = "journal/"

// journalBatch is the most entries one journal object holds.
const journalBatch = 1000

// JournalPos is the last entry ID written to the journal ("0-0": none).
func (k Keys) JournalPos() string { return k.base() + "journal_pos" }

// JournalLock is held by the one process that writes the journal.
func (k Keys) JournalLock() string { return k.base() + "journal_lock" }

// Journal copies the entries stream to append-only objects:
// <Prefix><from>-<to>.jsonl, one JSON object per entry and line (its ID as
// "id" and its stream fields verbatim: amounts stay decimal strings), from
// and to the first and last entry IDs written as 16-digit milliseconds,
// '.', 10-digit sequence, so that names sort in entry order. The position
// in Redis moves only after the object is stored; a crash between the two
// makes the next run find the object (by its first ID) and move on.
type Journal struct {
	Store   *Store
	Objects JournalObjects
	Prefix  string // DefaultJournalPrefix when empty
	// Batch is the most entries per object (1000 when 0).
	Batch int
}

func (j *Journal) prefix() string {
	if j.Prefix == "" {
		return DefaultJournalPrefix
	}
	return j.Prefix
}

// journalID renders an entry ID so that names sort: "ms-seq" becomes
// 16-digit ms, '.', 10-digit seq.
func journalID(id string) (string, error) {
	ms, seq, ok := strings.Cut(id, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return "", fmt.Errorf("ledger: journal: entry ID %q is not ms-seq", id)
	}
	return fmt.Sprintf("%016d.%010d", a, b), nil
}

// JournalKey is the object name of a batch from entry ID from to to.
func (j *Journal) JournalKey(from, to string) (string, error) {
	f, err := journalID(from)
	if err != nil {
		return "", err
	}
	t, err := journalID(to)
	if err != nil {
		return "", err
	}
	return j.prefix() + f + "-" + t + ".jsonl", nil
}

// Position is the last entry ID in the journal ("0-0": none).
func (j *Journal) Position(ctx context.Context) (string, error) {
	pos, err := j.Store.rdb.Get(ctx, j.Store.keys.JournalPos()).Result()
	if errors.Is(err, redis.Nil) {
		return "0-0", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: journal position: %w", err)
	}
	return pos, nil
}

// advanceLua moves the position from ARGV[1] to ARGV[2] unless someone
// else moved it meanwhile. Returns 1 moved, 0 not.
const advanceLua = `
local cur = redis.call('GET', KEYS[1]) or '0-0'
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`

var advanceScript = redis.NewScript(advanceLua)

// JournalLine is one entry as the journal holds it.
func journalLine(m redis.XMessage) ([]byte, error) {
	fields := make(map[string]string, len(m.Values)+1)
	for k, v := range m.Values {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("ledger: journal: entry %s field %s is not a string", m.ID, k)
		}
		fields[k] = s
	}
	fields["id"] = m.ID
	return json.Marshal(fields) // map keys sorted: the same entries give the same bytes
}

// Step writes at most one batch of the entries after the position and
// advances it. It returns how many entries were journaled (0: caught up).
func (j *Journal) Step(ctx context.Context) (int, error) {
	batch := j.Batch
	if batch <= 0 {
		batch = journalBatch
	}
	pos, err := j.Position(ctx)
	if err != nil {
		return 0, err
	}
	msgs, err := j.Store.rdb.XRangeN(ctx, j.Store.keys.Entries(), "("+pos, "+", int64(batch)).Result()
	if err != nil {
		return 0, fmt.Errorf("ledger: journal: read entries: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	from := msgs[0].ID
	// A crash after the object was stored and before the position moved:
	// the object starting at this entry is there already (maybe with fewer
	// entries than there are now); move past it instead of writing again.
	f, err := journalID(from)
	if err != nil {
		return 0, err
	}
	var found string
	if err := j.Objects.ListKeys(ctx, j.prefix()+f+"-", func(k string) error { found = k; return nil }); err != nil {
		return 0, fmt.Errorf("ledger: journal: %w", err)
	}
	if found != "" {
		last, n, err := lastIDIn(ctx, j.Objects, found)
		if err != nil {
			return 0, err
		}
		return n, j.advance(ctx, pos, last)
	}
	var body bytes.Buffer
	for _, m := range msgs {
		line, err := journalLine(m)
		if err != nil {
			return 0, err
		}
		body.Write(line)
		body.WriteByte('\n')
	}
	to := msgs[len(msgs)-1].ID
	key, err := j.JournalKey(from, to)
	if err != nil {
		return 0, err
	}
	if _, err := j.Objects.PutBytes(ctx, key, body.Bytes(), "application/x-ndjson"); err != nil {
		return 0, fmt.Errorf("ledger: journal: %w", err)
	}
	return len(msgs), j.advance(ctx, pos, to)
}

func (j *Journal) advance(ctx context.Context, from, to string) error {
	n, err := advanceScript.Run(ctx, j.Store.rdb, []string{j.Store.keys.JournalPos()}, from, to).Int()
	if err != nil {
		return fmt.Errorf("ledger: journal: move the position: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("ledger: journal: the position moved meanwhile (another journal writer): nothing lost, the next run goes on from it")
	}
	return nil
}

// lastIDIn reads a journal object and returns its last entry ID and count.
func lastIDIn(ctx context.Context, o JournalObjects, key string) (string, int, error) {
	lines, err := readJournalObject(ctx, o, key)
	if err != nil {
		return "", 0, err
	}
	if len(lines) == 0 {
		return "", 0, fmt.Errorf("ledger: journal: %s is empty", key)
	}
	return lines[len(lines)-1]["id"], len(lines), nil
}

// readJournalObject parses one journal object.
func readJournalObject(ctx context.Context, o JournalObjects, key string) ([]map[string]string, error) {
	b, err := o.GetBytes(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("ledger: journal: %w", err)
	}
	var out []map[string]string
	for i, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var m map[string]string
		if err := json.Unmarshal(l, &m); err != nil {
			return nil, fmt.Errorf("ledger: journal: %s line %d: %w", key, i+1, err)
		}
		if _, err := journalID(m["id"]); err != nil {
			return nil, fmt.Errorf("ledger: journal: %s line %d: %w", key, i+1, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Run journals until caught up (Step until it returns 0) and returns how
// many entries it wrote. Only one process at a time does it: the others
// find the lock (SET NX PX lease) held and return 0 at once.
func (j *Journal) Run(ctx context.Context, lease time.Duration) (int, error) {
	token := randomToken()
	ok, err := j.Store.rdb.SetNX(ctx, j.Store.keys.JournalLock(), token, lease).Result()
	if err != nil {
		return 0, fmt.Errorf("ledger: journal lock: %w", err)
	}
	if !ok {
		return 0, nil
	}
	defer releaseScript.Run(context.WithoutCancel(ctx), j.Store.rdb, []string{j.Store.keys.JournalLock()}, token)
	total := 0
	for {
		n, err := j.Step(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func randomToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ReadJournal calls fn with every journaled entry, oldest first, each once:
// entries of an object that repeat ones already read (an overlap) are
// skipped; an entry older than one read before is an error.
func ReadJournal(ctx context.Context, o JournalObjects, prefix string, fn func(key string, e map[string]string) error) error {
	if prefix == "" {
		prefix = DefaultJournalPrefix
	}
	var keys []string
	if err := o.ListKeys(ctx, prefix, func(k string) error {
		if strings.HasSuffix(k, ".jsonl") {
			keys = append(keys, k)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("ledger: journal: %w", err)
	}
	sort.Strings(keys)
	last := "0-0"
	for _, k := range keys {
		lines, err := readJournalObject(ctx, o, k)
		if err != nil {
			return err
		}
		for _, m := range lines {
			if !idAfter(m["id"], last) {
				continue
			}
			last = m["id"]
			if err := fn(k, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// idAfter reports whether stream ID a is after b.
func idAfter(a, b string) bool {
	pa, _ := journalID(a)
	pb, _ := journalID(b)
	return pa > pb
}
