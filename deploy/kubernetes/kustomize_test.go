package kubernetes_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sigilhq/sigil/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func kubectl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SIGIL_KUBECTL"); p != "" {
		return p
	}
	dir := os.Getenv("SIGIL_TOOLS")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "sigil", "tools")
	}
	p := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("kubectl not found at %s: run bash hack/setup/60-kubernetes.sh (builds kubectl v1.37.2 into the tools cache) or set SIGIL_KUBECTL", p)
	}
	return p
}

func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.Bytes()
}

// TestOverlaysApply builds every kustomization with kubectl's kustomize and
// applies it to a real API server with server-side dry run: each object
// must pass the server's schema and admission.
func TestOverlaysApply(t *testing.T) {
	k := kubectl(t)
	c := kubetest.Start(t)
	// Dry run creates no namespace: the ones the manifests fill must exist.
	for _, ns := range []string{"sigil", "shop"} {
		_, err := c.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"base", "overlays/postgres", "overlays/example"} {
		t.Run(dir, func(t *testing.T) {
			yaml := run(t, nil, k, "kustomize", "--load-restrictor", "LoadRestrictionsNone", dir)
			for _, want := range []string{"kind: CustomResourceDefinition", "kind: DaemonSet", "kind: StatefulSet", "image: ghcr.io/sigilhq/sigil:latest"} {
				if !bytes.Contains(yaml, []byte(want)) {
					t.Errorf("%s: no %q in the build", dir, want)
				}
			}
			if bytes.Contains(yaml, []byte("image: sigil\n")) {
				t.Errorf("%s: an image is left as the placeholder sigil", dir)
			}
			out := run(t, yaml, k, "--kubeconfig", c.Kubeconfig, "apply", "--dry-run=server", "-f", "-")
			t.Logf("%s:\n%s", dir, out)
		})
	}
}
