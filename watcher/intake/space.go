package intake

import (
	"context"
	"fmt"
	"net/http"
)

// Uploads promise disk space before they write it, so DAB_MIN_FREE_BYTES
// holds for uploads that run at the same time and for bodies whose size is
// not known up front (chunked PUTs, tus PATCHes): each upload reserves what
// it declared, and past that it reserves reserveStep more at a time, each
// time checking the floor against what the disk has left after every other
// upload's outstanding promise.

// reserveStep is how much more an upload promises once it has written
// what it reserved.
const reserveStep = 1 << 20

// reservation is the disk space one upload holds against the floor.
type reservation struct {
	in   *Intake
	held int64 // bytes promised so far
	used int64 // bytes written so far
}

// errNoSpace answers an upload that the spool's disk cannot take. It names
// the cause without the server's paths.
var errNoSpace = &httpError{http.StatusInsufficientStorage, "insufficient_storage",
	"the server's upload disk is full: nothing was kept; retry later (operators: free space on the spool's disk, see /readyz)"}

// reserve starts a reservation for an upload of declared bytes (-1:
// unknown); it fails with errNoSpace when the disk would keep less than
// MinFreeBytes.
func (in *Intake) reserve(declared int64) (*reservation, error) {
	r := &reservation{in: in}
	if in.cfg.MinFreeBytes <= 0 {
		return r, nil
	}
	in.spaceMu.Lock()
	defer in.spaceMu.Unlock()
	if err := in.promise(max(declared, 0)); err != nil {
		return nil, err
	}
	r.held = max(declared, 0)
	return r, nil
}

// promise adds n bytes to the outstanding promises if the floor holds.
// The caller holds spaceMu.
func (in *Intake) promise(n int64) error {
	free, err := in.spool.FreeBytes()
	if err != nil {
		return in.serverError("free_space", err)
	}
	if free-in.reserved-n < in.cfg.MinFreeBytes {
		in.log.Warn("intake.disk_low", "free_bytes", free, "promised_bytes", in.reserved, "asked_bytes", n, "min_free_bytes", in.cfg.MinFreeBytes)
		return errNoSpace
	}
	in.reserved += n
	return nil
}

// wrote accounts for n bytes about to be written: promised bytes turn into
// used ones, and past the promise another step is reserved.
func (r *reservation) wrote(n int) error {
	in := r.in
	if in.cfg.MinFreeBytes <= 0 || n == 0 {
		return nil
	}
	in.spaceMu.Lock()
	defer in.spaceMu.Unlock()
	in.reserved -= min(int64(n), max(r.held-r.used, 0))
	r.used += int64(n)
	if r.used <= r.held {
		return nil
	}
	if err := in.promise(reserveStep); err != nil {
		return err
	}
	r.held = r.used + reserveStep
	return nil
}

// release gives back what the upload promised and did not write.
func (r *reservation) release() {
	if r == nil || r.in.cfg.MinFreeBytes <= 0 {
		return
	}
	r.in.spaceMu.Lock()
	defer r.in.spaceMu.Unlock()
	r.in.reserved -= max(r.held-r.used, 0)
	r.held = r.used
}

// CheckDisk is a readiness check: it fails while the spool's disk has less
// than MinFreeBytes free.
func (in *Intake) CheckDisk(context.Context) error {
	free, err := in.spool.FreeBytes()
	if err != nil {
		return err
	}
	if free < in.cfg.MinFreeBytes {
		return fmt.Errorf("%d bytes free on the spool's disk, below DAB_MIN_FREE_BYTES (%d): uploads are refused until space is freed", free, in.cfg.MinFreeBytes)
	}
	return nil
}
