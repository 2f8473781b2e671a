// Package hsmtest gives tests a fresh, empty SoftHSM2 token to keep keys in.
package hsmtest
