package docgen

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// CLI renders every visible command under root as Markdown: usage, one-line
// description and flags.
func CLI(root *cobra.Command) string {
	var b strings.Builder
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Runnable() {
			fmt.Fprintf(&b, "#### `%s`\n\n%s\n\n", c.UseLine(), c.Short)
			if fl := c.NonInheritedFlags().FlagUsages(); fl != "" {
				fmt.Fprintf(&b, "```\n%s```\n\n", fl)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return b.String()
}

// Config renders the YAML keys of the struct named root, declared in the Go
// source file path (its nested structs too, from the same file), as a
// Markdown table of key, type and the field's comment.
func Config(path, root string) (string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
	if err != nil {
		return "", err
	}
	structs := map[string]*ast.StructType{}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			if st, ok := ts.Type.(*ast.StructType); ok {
				structs[ts.Name.Name] = st
			}
		}
		return true
	})
	if structs[root] == nil {
		return "", fmt.Errorf("%s: no struct %s", path, root)
	}
	var b strings.Builder
	b.WriteString("| key | type | meaning |\n|---|---|---|\n")
	var walk func(prefix string, st *ast.StructType)
	walk = func(prefix string, st *ast.StructType) {
		for _, field := range st.Fields.List {
			if field.Tag == nil || len(field.Names) == 0 {
				continue
			}
			tag, _ := strconv.Unquote(field.Tag.Value)
			key, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			typ := typeName(field.Type)
			comment := strings.TrimSpace(field.Comment.Text() + " " + field.Doc.Text())
			comment = strings.ReplaceAll(strings.Join(strings.Fields(comment), " "), "|", `\|`)
			if nested := structs[strings.TrimPrefix(typ, "*")]; nested != nil {
				fmt.Fprintf(&b, "| `%s%s` | map | %s |\n", prefix, key, comment)
				walk(prefix+key+".", nested)
				continue
			}
			if nested := structs[strings.TrimPrefix(typ, "map[string]")]; nested != nil {
				fmt.Fprintf(&b, "| `%s%s` | map of NAME to map | %s |\n", prefix, key, comment)
				walk(prefix+key+".NAME.", nested)
				continue
			}
			fmt.Fprintf(&b, "| `%s%s` | %s | %s |\n", prefix, key, yamlType(typ), comment)
		}
	}
	walk("", structs[root])
	return b.String(), nil
}

func typeName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.StarExpr:
		return "*" + typeName(t.X)
	case *ast.ArrayType:
		return "[]" + typeName(t.Elt)
	case *ast.SelectorExpr:
		return typeName(t.X) + "." + t.Sel.Name
	case *ast.MapType:
		return "map[" + typeName(t.Key) + "]" + typeName(t.Value)
	}
	return "?"
}

func yamlType(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "string"
	case "bool":
		return "bool"
	case "int", "int64", "uint64":
		return "integer"
	case "[]string":
		return "list of strings"
	case "Addresses": // agentconfig: one host:port or a list
		return "string or list of strings"
	}
	return goType
}
