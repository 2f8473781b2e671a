// Package unix attests a local workload from its peer credentials and
// /proc: uid, gid, user and group names, and, when the connection is held
// by that process alone, supplementary groups, executable path and sha256.
package unix
