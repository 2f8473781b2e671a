// Package typesv1 is the generated Go code of the messages the admin and node APIs share (types.proto); regenerate with hack/gen-proto.sh.
package typesv1
