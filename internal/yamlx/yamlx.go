package yamlx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxSize bounds a configuration document.
const MaxSize = 1 << 20

var notFound = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// DecodeStrict decodes one YAML document into v. Unknown keys, a second
// document and an empty document are errors.
func DecodeStrict(data []byte, v any) error {
	if len(data) > MaxSize {
		return fmt.Errorf("config is larger than %d bytes", MaxSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("config is empty")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return clean(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("config holds more than one YAML document")
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
