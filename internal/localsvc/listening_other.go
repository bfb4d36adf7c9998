//go:build !linux

package localsvc

// listening cannot tell on this system: the readiness check alone decides.
func listening(pid, port int) (owned, known bool) { return false, false }
