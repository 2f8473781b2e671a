// Package unix attests a local workload from its peer credentials and
// /proc: uid, gid, user and group names, supplementary groups, executable
// path and sha256.
package unix
