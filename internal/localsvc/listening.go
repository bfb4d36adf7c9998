package localsvc

import (
	"fmt"
	"os"
	"strings"
)

// listening reports whether process pid holds the socket listening on
// 127.0.0.1:port (known false: there is no /proc to tell). A server that lost
// the race for its port to another one exits, but until it does the
// other server answers on the port: looking at who holds the socket tells
// the two apart.
func listening(pid, port int) (owned, known bool) {
	if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
		return false, false // no procfs
	}
	// From here on, what cannot be read is not ours: a process that exited
	// (its bind refused) has no descriptors left to read.
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return false, true
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	sockets := map[string]bool{}
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
			sockets["socket:["+f[9]+"]"] = true
		}
	}
	if len(sockets) == 0 {
		return false, true
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false, true
	}
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && sockets[link] {
			return true, true
		}
	}
	return false, true
}
