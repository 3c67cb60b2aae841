#!/usr/bin/env bash
# Regenerates the committed protobuf code from proto/mesh/v1/*.proto:
#   Swift  -> Sources/MeshProto/      (swift-protobuf 1.39.0, protoc-gen-swift built once)
#   C      -> Sources/CMeshProtoC/    (protoc-c from Debian's protobuf-c-compiler; interop tests only)
# protoc-gen-swift is built from the mirrored swift-protobuf into .build-protoc/ the first time
# (a few minutes) and reused afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
version=1.39.0
tooldir="$root/.build-protoc"
plugin="$tooldir/swift-protobuf/.build/release/protoc-gen-swift"

for tool in protoc protoc-c; do
  command -v "$tool" >/dev/null || { echo "generate.sh: $tool is missing (apt-get install protobuf-compiler protobuf-c-compiler)" >&2; exit 1; }
done

if [ ! -x "$plugin" ]; then
  echo "generate.sh: building protoc-gen-swift $version (once)..."
  mkdir -p "$tooldir"
  if [ ! -d "$tooldir/swift-protobuf" ]; then
    git clone --quiet --depth 1 --branch "$version" https://github.com/apple/swift-protobuf "$tooldir/swift-protobuf"
  fi
  (cd "$tooldir/swift-protobuf" && swift build -c release --product protoc-gen-swift)
fi

cd "$here"
protos=(mesh/v1/*.proto)

swift_out="$root/Sources/MeshProto"
mkdir -p "$swift_out"
rm -f "$swift_out"/*.pb.swift
protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$swift_out" "${protos[@]}"

c_out="$root/Sources/CMeshProtoC"
rm -rf "$c_out/generated"
mkdir -p "$c_out/generated/mesh/v1"
protoc --c_out="$c_out/generated" "${protos[@]}"
# SwiftPM compiles every .c under the target; headers must sit under include/ to be public.
mkdir -p "$c_out/include"
# The interop harness (interop.c) finds messages by full name in a table of every descriptor protoc-c
# emitted; writing the table here keeps it complete whenever a message is added.
{
  echo "/* Written by proto/generate.sh from the protoc-c headers: every mesh.v1 message descriptor. Do not edit. */"
  for header in "$c_out"/generated/mesh/v1/*.pb-c.h; do
    echo "#include \"mesh/v1/$(basename "$header")\""
  done
  echo "#define MESH_INTEROP_DESCRIPTORS \\"
  sed -n -E 's/^extern const ProtobufCMessageDescriptor ([A-Za-z0-9_]+);$/    \&\1, \\/p' \
    "$c_out"/generated/mesh/v1/*.pb-c.h
  echo "    /* end of table */"
} > "$c_out/generated/mesh_descriptors.inc"
echo "generate.sh: wrote $(ls "$swift_out"/*.pb.swift | wc -l) Swift files and $(ls "$c_out"/generated/mesh/v1/*.pb-c.c | wc -l) C files"
