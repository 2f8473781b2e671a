// Package agent runs the node agent: it attests the node to the CA, keeps
// its own SVID renewed, and keeps the SVID cache synced while serving it.
package agent
