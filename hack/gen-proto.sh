#!/usr/bin/env bash
# Regenerates the Go code for Sigil's own protos (api/**/*.proto).
# Needs protoc (3.21+, with its well-known types), protoc-gen-go v1.36.x and
# protoc-gen-go-grpc v1.5.x on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
	command -v "$tool" >/dev/null || { echo "gen-proto: $tool not on PATH" >&2; exit 1; }
done
protoc \
	--proto_path=. \
	--go_out=. --go_opt=module=github.com/sigilhq/sigil \
	--go-grpc_out=. --go-grpc_opt=module=github.com/sigilhq/sigil \
	api/types/v1/types.proto api/admin/v1/admin.proto api/node/v1/node.proto
gofmt -l api/ | (! grep .) || { echo "gen-proto: generated code not gofmt-clean" >&2; exit 1; }
