package kubetest

import (
	"context"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { Main(m) }

func TestBinaryMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("SIGIL_TOOLS", t.TempDir())
	if _, err := binary("SIGIL_KUBE_APISERVER_UNSET_FOR_TEST", "kube-apiserver"); err == nil || !strings.Contains(err.Error(), NotFound) {
		t.Fatalf("binary() error = %v, want one containing %q", err, NotFound)
	}
}

// TestBoundTokenReview checks what the k8s tests rely on: a token bound to a
// pod, for an audience, passes a TokenReview for that audience and names the
// pod; a review for another audience fails.
func TestBoundTokenReview(t *testing.T) {
	c := Start(t)
	ns := c.Namespace(t, "kubetest")
	c.ServiceAccount(t, ns, "agent")
	c.Node(t, "node-a", map[string]string{"zone": "a"})
	pod := c.Pod(t, ns, "agent-1", "agent", "node-a", nil)
	pod = c.SetContainerID(t, ns, pod.Name, map[string]string{"app": "containerd://" + strings.Repeat("ab", 32)})
	if pod.Status.ContainerStatuses[0].ContainerID == "" {
		t.Fatal("status update lost the container ID")
	}
	tok := c.PodToken(t, pod, "sigil", 10*time.Minute)

	review := func(aud string) *authenticationv1.TokenReview {
		r, err := c.Client.AuthenticationV1().TokenReviews().Create(context.Background(), &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{aud}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenReview: %v", err)
		}
		return r
	}
	r := review("sigil")
	if !r.Status.Authenticated {
		t.Fatalf("bound token not authenticated: %q", r.Status.Error)
	}
	if want := "system:serviceaccount:" + ns + ":agent"; r.Status.User.Username != want {
		t.Fatalf("username %q, want %q", r.Status.User.Username, want)
	}
	if got := r.Status.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != "agent-1" {
		t.Fatalf("pod-name extra = %v", got)
	}
	if r := review("other"); r.Status.Authenticated {
		t.Fatal("token accepted for another audience")
	}
}
