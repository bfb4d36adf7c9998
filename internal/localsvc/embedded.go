package localsvc

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
)

// The stand-ins below run inside the dab process when redis-server or
// versitygw is not installed. They let `dab dev` work anywhere, with limits
// `dab dev` warns about: miniredis keeps everything in memory (lost at exit)
// and gofakes3 checks neither signatures nor checksums. Tests never use them.

// EmbeddedRedis is an in-process miniredis listening on loopback.
type EmbeddedRedis struct {
	m        *miniredis.Miniredis
	password string
}

// StartEmbeddedRedis starts miniredis on 127.0.0.1:port (0 picks one),
// requiring password of every client when it is set (every local user
// can reach loopback).
func StartEmbeddedRedis(port int, password string) (*EmbeddedRedis, error) {
	m := miniredis.NewMiniRedis()
	if password != "" {
		m.RequireAuth(password)
	}
	if err := m.StartAddr("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		return nil, fmt.Errorf("localsvc: start in-process redis: %w", err)
	}
	return &EmbeddedRedis{m: m, password: password}, nil
}

// URL is the redis:// URL of database 0, with the password if there is one.
func (r *EmbeddedRedis) URL() string { return redisURL(r.m.Addr(), r.password) }

// Stop ends the server; its data is gone.
func (r *EmbeddedRedis) Stop() error { r.m.Close(); return nil }

// EmbeddedS3 is an in-process gofakes3 keeping its objects as files under a folder.
type EmbeddedS3 struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// StartEmbeddedS3 serves the folder dir on 127.0.0.1:port (0 picks one).
func StartEmbeddedS3(dir string, port int) (*EmbeddedS3, error) {
	root, err := s3afero.FsPath(dir, s3afero.FsPathCreateAll)
	if err != nil {
		return nil, fmt.Errorf("localsvc: in-process store folder %s: %w", dir, err)
	}
	backend, err := s3afero.MultiBucket(root)
	if err != nil {
		return nil, fmt.Errorf("localsvc: open in-process store: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("localsvc: listen: %w", err)
	}
	faker := gofakes3.New(backend, gofakes3.WithAutoBucket(true), gofakes3.WithTimeSkewLimit(0))
	e := &EmbeddedS3{
		srv:  &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr().String(), done: make(chan struct{}),
	}
	go func() {
		defer close(e.done)
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "in-process S3 stand-in stopped: %v\n", err)
		}
	}()
	return e, nil
}

// Endpoint is the store's http:// URL.
func (e *EmbeddedS3) Endpoint() string { return "http://" + e.addr }

// Stop closes the server.
func (e *EmbeddedS3) Stop() error {
	err := e.srv.Close()
	<-e.done
	return err
}
