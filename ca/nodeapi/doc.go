// Package nodeapi serves the CA's node API (sigil.node.v1.Node): it attests
// agents and gives each one only the SVIDs and entries it is authorized for.
package nodeapi
