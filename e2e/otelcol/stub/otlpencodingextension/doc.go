// Package otlpencodingextension stands in for the contrib module of that name, which only the
// file exporter's own tests import: `go mod tidy` (run by the collector builder) resolves test
// imports too, and the module proxy this project uses does not serve that module. Nothing in
// the built collector links it.
package otlpencodingextension
