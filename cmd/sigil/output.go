package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// Output formats every command that prints data accepts with -o.
const (
	outTable = "table"
	outJSON  = "json"
	outYAML  = "yaml"
)

// outputFormats are the formats of -o, in the order help lists them.
var outputFormats = []string{outTable, outJSON, outYAML}

// addOutputFlag adds -o/--output table|json|yaml with table the default.
func addOutputFlag(cmd *cobra.Command, dst *string) {
	addOutputFlagDefault(cmd, dst, outTable)
}

// addOutputFlagDefault adds -o/--output table|json|yaml with def the
// default.
func addOutputFlagDefault(cmd *cobra.Command, dst *string, def string) {
	cmd.Flags().StringVarP(dst, "output", "o", def, "output format: table, json or yaml")
}

// checkOutput refuses a format other than table, json and yaml.
func checkOutput(o string) error {
	if !slices.Contains(outputFormats, o) {
		return usageErrorf("--output %q: want table, json or yaml", o)
	}
	return nil
}

// printData prints v as JSON or YAML. A proto message is printed with its
// proto field names and with enums as a person types them (x509, not
// KEY_KIND_X509); any other value through its json tags. Both formats carry
// the same fields.
func printData(w io.Writer, format string, v any) error {
	tree, err := dataTree(v)
	if err != nil {
		return err
	}
	var out []byte
	switch format {
	case outJSON:
		if out, err = json.MarshalIndent(tree, "", "  "); err != nil {
			return err
		}
		out = append(out, '\n')
	case outYAML:
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(yamlNumbers(tree)); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		out = buf.Bytes()
	default:
		return fmt.Errorf("print %s: not a data format", format)
	}
	_, err = w.Write(out)
	return err
}

// dataTree turns v into maps, slices, strings, bools and json.Numbers.
func dataTree(v any) (any, error) {
	var raw []byte
	var err error
	m, isProto := v.(proto.Message)
	if isProto {
		raw, err = protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	} else {
		raw, err = json.Marshal(v)
	}
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	if isProto {
		lowerEnums(tree, m.ProtoReflect().Descriptor())
	}
	return tree, nil
}

// yamlNumbers replaces json.Numbers (which YAML would quote as strings)
// by int64 or float64.
func yamlNumbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = yamlNumbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = yamlNumbers(e)
		}
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(string(t), 64); err == nil {
			return f
		}
		return string(t)
	}
	return v
}
