package main

import (
	"context"
	"fmt"
	"time"
)

// child is a server `dab dev` started (localsvc.Redis, localsvc.S3).
type child interface {
	Exited() <-chan struct{}
	Revive() error
	LogTail() string
}

// Restarts of a child that dies: backoff from devRestartFirst, doubling up
// to devRestartMax; after devRestartLimit deaths within devRestartWindow
// dab dev gives up and stops with the child's log.
const (
	devRestartFirst  = 500 * time.Millisecond
	devRestartMax    = 30 * time.Second
	devRestartLimit  = 5
	devRestartWindow = 5 * time.Minute
)

// supervise restarts c (named name) whenever it exits while ctx lasts,
// with backoff; when it keeps dying, it calls giveUp with an error that
// quotes its log.
func (a *app) supervise(ctx context.Context, name string, c child, giveUp func(error)) {
	var deaths []time.Time
	delay := devRestartFirst
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Exited():
		}
		if ctx.Err() != nil {
			return // stopped by dab dev itself
		}
		now := time.Now()
		deaths = append(deaths, now)
		for len(deaths) > 0 && now.Sub(deaths[0]) > devRestartWindow {
			deaths = deaths[1:]
		}
		if len(deaths) >= devRestartLimit {
			giveUp(fmt.Errorf("%s died %d times within %s; its log ends with: %s", name, len(deaths), devRestartWindow, c.LogTail()))
			return
		}
		a.log.Error("dev.child_died", "child", name, "restart_in", delay.String(), "log", c.LogTail(),
			"note", "dab dev restarts it on the same port with the same data; meanwhile requests that need it fail and are retried")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if err := c.Revive(); err != nil {
			a.log.Error("dev.child_restart_failed", "child", name, "error", err.Error())
		} else {
			a.log.Warn("dev.child_restarted", "child", name)
		}
		delay = min(2*delay, devRestartMax)
	}
}
