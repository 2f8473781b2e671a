// Command relay performs the exec-relay attack on a unix-socket attestor,
// for the tests of agent/attest/unix. The test server answers a line
// "fetch" with the selectors it attested, on one line.
//
//	relay direct SOCK                  connect, fetch, print the reply
//	relay relay SOCK TARGET inherit    connect; fork a child holding the
//	relay relay SOCK TARGET cloexec    connection (fd 3); exec TARGET (with
//	                                   the connection still open in it, or
//	                                   closed by exec); the child waits
//	                                   until its parent runs TARGET, then
//	                                   fetches through the connection and
//	                                   prints the reply
//	relay sleep                        wait for stdin to close (the target)
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: relay direct|relay|child|sleep ...")
	}
	switch args[0] {
	case "direct":
		if len(args) != 2 {
			return fmt.Errorf("usage: relay direct SOCK")
		}
		c, err := net.Dial("unix", args[1])
		if err != nil {
			return err
		}
		defer c.Close()
		return fetch(c)
	case "relay":
		if len(args) != 4 {
			return fmt.Errorf("usage: relay relay SOCK TARGET inherit|cloexec")
		}
		return relay(args[1], args[2], args[3])
	case "child":
		if len(args) != 3 {
			return fmt.Errorf("usage: relay child PARENTPID TARGET")
		}
		ppid, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		return child(ppid, args[2])
	case "sleep":
		_, _ = io.Copy(io.Discard, os.Stdin)
		return nil
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// fetch sends one request on rw and prints the reply line.
func fetch(rw io.ReadWriter) error {
	if _, err := io.WriteString(rw, "fetch\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(rw).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	fmt.Print("reply: " + line)
	return nil
}

func relay(sock, target, mode string) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	f, err := c.(*net.UnixConn).File() // a dup, close-on-exec
	if err != nil {
		return err
	}
	c.Close()
	switch mode {
	case "inherit":
		// Keep the connection open across exec: the target holds it too.
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), syscall.F_SETFD, 0); e != 0 {
			return fmt.Errorf("clear close-on-exec: %w", e)
		}
	case "cloexec":
	default:
		return fmt.Errorf("unknown relay mode %q", mode)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "child", strconv.Itoa(os.Getpid()), target)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	// Do not wait for the child: become the target. It keeps this PID,
	// the one SO_PEERCRED names.
	return syscall.Exec(target, []string{target, "sleep"}, os.Environ())
}

func child(ppid int, target string) error {
	conn := os.NewFile(3, "conn")
	deadline := time.Now().Add(10 * time.Second)
	for {
		exe, err := os.Readlink("/proc/" + strconv.Itoa(ppid) + "/exe")
		if err == nil && exe == target {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("parent %d never ran %s (exe %q, %v)", ppid, target, exe, err)
		}
		time.Sleep(time.Millisecond)
	}
	return fetch(conn)
}
