package yamlx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxSize bounds a configuration document.
const MaxSize = 1 << 20

var notFound = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// DecodeStrict decodes one YAML document, a mapping, into v. Unknown keys,
// an empty file (nothing, only comments, or null), more than one document
// and a document that is not a mapping are errors.
func DecodeStrict(data []byte, v any) error {
	if len(data) > MaxSize {
		return fmt.Errorf("config is larger than %d bytes", MaxSize)
	}
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return clean(err)
		}
		docs = append(docs, &n)
	}
	switch {
	case len(docs) > 1:
		return fmt.Errorf("config holds %d YAML documents (the second at line %d); want one", len(docs), docs[1].Line)
	case len(docs) == 0 || len(docs[0].Content) == 0 || docs[0].Content[0].Tag == "!!null":
		return errors.New("config is empty")
	case docs[0].Content[0].Kind != yaml.MappingNode:
		return fmt.Errorf("config: line %d: want a mapping of keys to values", docs[0].Content[0].Line)
	}
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return clean(err)
	}
	return nil
}

// clean rewrites yaml.v3's messages into ones that name the key and line
// without Go type names.
func clean(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if sub := notFound.FindStringSubmatch(m); sub != nil {
			msgs = append(msgs, fmt.Sprintf("line %s: unknown key %q", sub[1], sub[2]))
			continue
		}
		msgs = append(msgs, m)
	}
	return fmt.Errorf("config: %s", strings.Join(msgs, "; "))
}

// Schema is a configuration file's schema: it validates itself, once, into
// the typed runtime configuration C.
type Schema[C any] interface {
	Validate() (C, error)
}

// Parse decodes data strictly into a new F and validates it into C.
func Parse[F Schema[C], C any](data []byte) (C, error) {
	var f F
	if err := DecodeStrict(data, &f); err != nil {
		var zero C
		return zero, err
	}
	return f.Validate()
}

// Load reads the file at path and Parses it; an error in the file names the
// file.
func Load[F Schema[C], C any](path string) (C, error) {
	var zero C
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse[F](data)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
