//go:build tools

// Package tools pins the programs the benchmark builds and runs next to dab:
// s5cmd, the comparison uploader. It is a module of its own so s5cmd's
// dependencies stay out of dab's go.mod and the bench driver's.
package tools

import _ "github.com/peak/s5cmd/v2"
