package main

// P1 and P2: the same files through each of dab's entry points, timed until
// every record exists, next to `s5cmd cp` of a byte-identical set.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// smallSeed makes P1's three file sets (and s5cmd's) byte-identical.
const smallSeed = "p1"

// p1Drop is P1a: the files moved (renamed) one after the other into the drop
// folder of a running `dab watch` + `dab work`. It returns dab's files/s,
// which P5 is compared with.
func (b *bench) p1Drop(ctx context.Context, t *table) (float64, error) {
	o := b.opt
	r, err := b.newRun("p1a")
	if err != nil {
		return 0, err
	}
	defer r.stopAll(nil)
	staging := filepath.Join(r.dir, "staging")
	names, err := makeFiles(staging, o.files, o.fileSize, smallSeed)
	if err != nil {
		return 0, err
	}
	if _, err := r.start(ctx, "work"); err != nil {
		return 0, err
	}
	if _, err := r.start(ctx, "watch"); err != nil {
		return 0, err
	}
	p := startPoller(b.rdb, r.prefix)
	defer p.stop()
	redis0, err := b.redisCPU(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for _, name := range names {
		if err := os.Rename(filepath.Join(staging, name), filepath.Join(r.target(), name)); err != nil {
			return 0, err
		}
		p.expect(r.key(name), time.Now())
	}
	if err := p.wait(ctx, o.timeout, r.servers); err != nil {
		return 0, err
	}
	took := p.last().Sub(start).Seconds()
	redis1, err := b.redisCPU(ctx)
	if err != nil {
		return 0, err
	}
	rss := r.stopAll(t)
	perFile := func(sec float64) string { return micros(sec / float64(o.files)) }
	cpu := fmt.Sprintf("CPU per file: watch %s, work %s, redis %s (the poller's included)", perFile(r.cpu("dab watch")), perFile(r.cpu("dab work")), perFile(redis1-redis0))
	s5, err := b.s5cmdSmall(ctx, r)
	if err != nil {
		return 0, err
	}
	t.add(row{
		work:  fmt.Sprintf("P1a %s x %s moved into the drop folder (watch + work)", count(o.files), size(int64(o.fileSize))),
		dab:   fmt.Sprintf("%s (%s; %s)", seconds(took), perSec(float64(o.files), took, "files"), cpu),
		s5cmd: fmt.Sprintf("%s (%s)", seconds(s5.seconds), perSec(float64(o.files), s5.seconds, "files")),
		ratio: fmt.Sprintf("%.2f", took/s5.seconds),
		rss:   rss + "; s5cmd " + mib(s5.rss),
	})
	return float64(o.files) / took, nil
}

// p1Upload is P1b: the files through one `dab upload FILE...` command, with a
// running `dab work`.
func (b *bench) p1Upload(ctx context.Context, t *table) error {
	o := b.opt
	r, err := b.newRun("p1b")
	if err != nil {
		return err
	}
	defer r.stopAll(nil)
	src := filepath.Join(r.dir, "src")
	names, err := makeFiles(src, o.files, o.fileSize, smallSeed)
	if err != nil {
		return err
	}
	if _, err := r.start(ctx, "work"); err != nil {
		return err
	}
	args := []string{"upload", "--folder", r.name}
	for _, name := range names {
		args = append(args, filepath.Join(src, name))
	}
	cmd, _, err := r.command(args...)
	if err != nil {
		return err
	}
	p := startPoller(b.rdb, r.prefix)
	defer p.stop()
	start := time.Now()
	for _, name := range names {
		p.expect(r.key(name), start)
	}
	up, err := startChild("dab upload", cmd, "", "")
	if err != nil {
		return err
	}
	defer up.stop()
	if err := up.wait(ctx); err != nil {
		return err
	}
	uploadTook := time.Since(start).Seconds()
	if err := p.wait(ctx, o.timeout, r.servers); err != nil {
		return err
	}
	took := p.last().Sub(start).Seconds()
	rss := r.stopAll(t)
	s5, err := b.s5cmdSmall(ctx, r)
	if err != nil {
		return err
	}
	t.add(row{
		work:  "P1b the same through one `dab upload FILE...` (+ work)",
		dab:   fmt.Sprintf("%s (%s; the command %s)", seconds(took), perSec(float64(o.files), took, "files"), seconds(uploadTook)),
		s5cmd: fmt.Sprintf("%s (%s)", seconds(s5.seconds), perSec(float64(o.files), s5.seconds, "files")),
		ratio: fmt.Sprintf("%.2f", took/s5.seconds),
		rss:   fmt.Sprintf("upload %s, %s; s5cmd %s", mib(up.peakRSS()), rss, mib(s5.rss)),
	})
	return nil
}

// p1HTTP is P1c: the files PUT through the HTTP API of a `dab watch` (with a
// `dab work`) by concurrent clients, each running one curl per file.
func (b *bench) p1HTTP(ctx context.Context, t *table) error { return b.p1HTTPWith(ctx, t, false) }

// p1HTTPKeepAlive is P1d: P1c's PUTs, but each of the clients is one curl
// process that sends its share of the files over one connection: dab's
// HTTP intake without the cost of starting a process per file.
func (b *bench) p1HTTPKeepAlive(ctx context.Context, t *table) error {
	return b.p1HTTPWith(ctx, t, true)
}

func (b *bench) p1HTTPWith(ctx context.Context, t *table, keepAlive bool) error {
	o := b.opt
	name, line, how := "p1c", "P1c", "one curl per file"
	if keepAlive {
		name, line, how = "p1d", "P1d", "one curl per client over one connection"
	}
	r, err := b.newRun(name)
	if err != nil {
		return err
	}
	defer r.stopAll(nil)
	src := filepath.Join(r.dir, "src")
	names, err := makeFiles(src, o.files, o.fileSize, smallSeed)
	if err != nil {
		return err
	}
	if _, err := r.start(ctx, "work"); err != nil {
		return err
	}
	watch, err := r.start(ctx, "watch")
	if err != nil {
		return err
	}
	p := startPoller(b.rdb, r.prefix)
	defer p.stop()
	start := time.Now()
	for _, name := range names {
		p.expect(r.key(name), start)
	}
	curl := b.curlAll
	if keepAlive {
		curl = b.curlClients
	}
	if err := curl(ctx, src, names, "http://"+watch.addr+"/v1/assets/generic/"+r.name+"/"); err != nil {
		return err
	}
	putTook := time.Since(start).Seconds()
	if err := p.wait(ctx, o.timeout, r.servers); err != nil {
		return err
	}
	took := p.last().Sub(start).Seconds()
	rss := r.stopAll(t)
	s5, err := b.s5cmdSmall(ctx, r)
	if err != nil {
		return err
	}
	t.add(row{
		work:  fmt.Sprintf("%s the same PUT through the HTTP API, %s, %d at a time (watch + work)", line, how, o.clients),
		dab:   fmt.Sprintf("%s (%s; the PUTs %s)", seconds(took), perSec(float64(o.files), took, "files"), seconds(putTook)),
		s5cmd: fmt.Sprintf("%s (%s)", seconds(s5.seconds), perSec(float64(o.files), s5.seconds, "files")),
		ratio: fmt.Sprintf("%.2f", took/s5.seconds),
		rss:   rss + "; s5cmd " + mib(s5.rss),
	})
	return nil
}

// curlAll PUTs every file to base+name, b.opt.clients at a time, one curl
// process per file (what a shell script posting files would do).
func (b *bench) curlAll(ctx context.Context, dir string, names []string, base string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan string)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range b.opt.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				cmd := exec.Command("curl", "-sS", "-f", "-X", "PUT", "--data-binary", "@"+filepath.Join(dir, name),
					"-H", "Authorization: Bearer "+adminToken, base+name)
				cmd.Env = b.env
				c, err := startChild("curl", cmd, "", "")
				if err == nil {
					err = c.wait(ctx)
				}
				if err != nil {
					once.Do(func() { first = fmt.Errorf("PUT %s: %w", name, err); cancel() })
					return
				}
			}
		}()
	}
feed:
	for _, name := range names {
		select {
		case jobs <- name:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// curlClients PUTs every file to base+name with b.opt.clients curl
// processes, each sending its share (every clients-th file) over one kept
// connection (curl -T FILE URL, repeated).
func (b *bench) curlClients(ctx context.Context, dir string, names []string, base string) error {
	var g sync.WaitGroup
	errs := make(chan error, b.opt.clients)
	for c := range b.opt.clients {
		args := []string{"-sS", "-f", "-o", "/dev/null", "-H", "Authorization: Bearer " + adminToken}
		for i := c; i < len(names); i += b.opt.clients {
			args = append(args, "-T", filepath.Join(dir, names[i]), base+names[i])
		}
		cmd := exec.Command("curl", args...)
		cmd.Env = b.env
		child, err := startChild("curl", cmd, "", "")
		if err != nil {
			return err
		}
		g.Add(1)
		go func() {
			defer g.Done()
			if err := child.wait(ctx); err != nil {
				errs <- fmt.Errorf("curl client %d: %w", c, err)
			}
		}()
	}
	g.Wait()
	close(errs)
	return <-errs
}

// s5cmdSmall copies a set byte-identical to P1's files with s5cmd.
func (b *bench) s5cmdSmall(ctx context.Context, r *runEnv) (copied, error) {
	dir := filepath.Join(r.dir, "s5cmd")
	if _, err := makeFiles(dir, b.opt.files, b.opt.fileSize, smallSeed); err != nil {
		return copied{}, err
	}
	return b.s5cmdCopy(ctx, dir+"/*", "s5cmd/"+r.name, b.opt.files)
}

// p2Big is P2: one large file moved into the drop folder, until recorded.
func (b *bench) p2Big(ctx context.Context, t *table) error {
	o := b.opt
	r, err := b.newRun("p2")
	if err != nil {
		return err
	}
	defer r.stopAll(nil)
	const name, seed = "big.bin", "p2"
	staged := filepath.Join(r.dir, "staging", name)
	if err := makeBigFile(staged, o.big, seed); err != nil {
		return err
	}
	if _, err := r.start(ctx, "work"); err != nil {
		return err
	}
	if _, err := r.start(ctx, "watch"); err != nil {
		return err
	}
	p := startPoller(b.rdb, r.prefix)
	defer p.stop()
	start := time.Now()
	if err := os.Rename(staged, filepath.Join(r.target(), name)); err != nil {
		return err
	}
	p.expect(r.key(name), start)
	if err := p.wait(ctx, o.timeout, r.servers); err != nil {
		return err
	}
	took := p.last().Sub(start).Seconds()
	rss := r.stopAll(t)

	theirs := filepath.Join(r.dir, "s5cmd", name)
	if err := makeBigFile(theirs, o.big, seed); err != nil {
		return err
	}
	s5, err := b.s5cmdCopy(ctx, theirs, "s5cmd/"+r.name, 1)
	if err != nil {
		return err
	}
	mibs := float64(o.big) / (1 << 20)
	t.add(row{
		work:  fmt.Sprintf("P2  1 file of %s moved into the drop folder (watch + work)", size(o.big)),
		dab:   fmt.Sprintf("%s (%s)", seconds(took), perSec(mibs, took, "MiB")),
		s5cmd: fmt.Sprintf("%s (%s)", seconds(s5.seconds), perSec(mibs, s5.seconds, "MiB")),
		ratio: fmt.Sprintf("%.2f", took/s5.seconds),
		rss:   rss + "; s5cmd " + mib(s5.rss),
	})
	return nil
}
