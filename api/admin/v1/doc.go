// Package adminv1 is the generated Go code of the CA's admin API (admin.proto); regenerate with hack/gen-proto.sh.
package adminv1
