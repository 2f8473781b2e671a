// Package systemd holds systemd units and sample configurations that run
// Sigil on VMs and hosts; its test verifies them with systemd's own tools.
package systemd
