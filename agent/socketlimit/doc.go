// Package socketlimit bounds each uid's use of the agent socket (open
// calls, connections, JWT-SVID requests per second) and everyone's,
// refusing past a limit with ResourceExhausted.
package socketlimit
